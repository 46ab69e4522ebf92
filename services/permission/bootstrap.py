"""First tokens for a fresh mesh, written straight into the permission database.

Nobody can call AdminService before an admin token exists, so `nija up` (and an operator with
`nija tokens create --offline`) mints the first ones here, before the permission service runs.
Tokens minted by an earlier `nija up` for its services are revoked, so a stopped mesh leaves no
valid service token behind.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from services.permission.accounts import TokenAuthority
from services.permission.demo import DEMO_USERS
from services.permission.store import UserStore
from services.runtime.auth import PrincipalKind

#: The description that marks tokens `nija up` minted (and will revoke on the next start).
UP_MARK = "minted by nija up"


@dataclasses.dataclass(frozen=True)
class Issued:
    services: dict[str, str]
    admin: str
    users: dict[str, str]


async def issue_mesh_tokens(
    database: str, services: Sequence[str], users: Sequence[str] = (), seed_demo_users: bool = True
) -> Issued:
    store = UserStore(database)
    await store.open()
    try:
        if seed_demo_users:
            await store.seed_if_empty(DEMO_USERS)
        authority = TokenAuthority(store)
        for record in await store.list_tokens(None):
            if record.description == UP_MARK and record.revoked_at is None:
                await authority.revoke(record.token_id)
        minted_services = {
            name: (await authority.create(PrincipalKind.SERVICE, name, UP_MARK))[0] for name in services
        }
        admin, _ = await authority.create(PrincipalKind.ADMIN, "operator", UP_MARK)
        minted_users = {user: (await authority.create(PrincipalKind.USER, user, UP_MARK))[0] for user in users}
        return Issued(minted_services, admin, minted_users)
    finally:
        await store.close()


async def create_token_offline(database: str, kind: PrincipalKind, subject: str, description: str) -> str:
    """One token, without a running permission service (the first admin token of a deployment)."""
    store = UserStore(database)
    await store.open()
    try:
        token, _ = await TokenAuthority(store).create(kind, subject, description)
        return token
    finally:
        await store.close()
