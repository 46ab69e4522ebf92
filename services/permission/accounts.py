"""The permission service's secrets and switches: API keys, tokens, kill switches.

Accounts     users' exchange API keys, sealed with the master keyring (AES-256-GCM), opened only
             for executors; master key rotation re-seals every key in small batches.
TokenAuthority  bearer tokens: minted here, stored as hashes, resolved to principals.
Controls     the global and per-user kill switches, and the stream executors watch them on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timezone

import grpc

from services.permission import tokens as token_text
from services.permission.checks import Decision, kill_switch_denial
from services.permission.keyring import (
    ApiCredentials,
    Keyring,
    SecretError,
    reseal,
    seal,
    unseal,
)
from services.permission.permissions import ApiKeyInfo, KillSwitches, TokenRecord
from services.permission.store import UserStore
from services.runtime.aio import wait_set
from services.runtime.auth import Principal, PrincipalKind
from services.runtime.errors import ServiceError

log = logging.getLogger(__name__)


def _aad(user_id: str, broker: str) -> bytes:
    """Binds a ciphertext to its owner: a sealed key moved to another user's row does not open."""
    return f"{user_id}|{broker}".encode()


class Accounts:
    def __init__(self, store: UserStore, load_keyring: Callable[[], Keyring]) -> None:
        self._store = store
        self._load_keyring = load_keyring
        self._keyring: Keyring | None = None

    def open(self) -> None:
        self._keyring = self._load_keyring()
        log.info("master keyring loaded", extra={"active_key_id": self._keyring.active_id})

    @property
    def keyring(self) -> Keyring:
        if self._keyring is None:
            raise ServiceError(grpc.StatusCode.UNAVAILABLE, "NOT_READY", "the master keyring is not loaded")
        return self._keyring

    async def set_credentials(
        self, user_id: str, broker: str, api_key: str, api_secret: str, passphrase: str
    ) -> ApiKeyInfo:
        sealed = seal(self.keyring, ApiCredentials(api_key, api_secret, passphrase).to_bytes(), _aad(user_id, broker))
        await self._store.put_api_key(user_id, broker, sealed)
        infos = await self._store.list_api_keys(user_id)
        return next(i for i in infos if i.broker == broker)

    async def credentials(self, user_id: str, broker: str) -> ApiCredentials | None:
        sealed = await self._store.get_api_key(user_id, broker)
        if sealed is None:
            return None
        try:
            return ApiCredentials.from_bytes(unseal(self.keyring, sealed, _aad(user_id, broker)))
        except SecretError as exc:
            log.error("stored api keys cannot be opened", extra={"user_id": user_id, "broker": broker, "error": str(exc)})
            raise ServiceError(
                grpc.StatusCode.FAILED_PRECONDITION, "KEYS_UNREADABLE",
                f"the stored {broker} keys of user {user_id} cannot be decrypted with the configured master keys",
            ) from None

    async def rotate(self) -> tuple[str, int]:
        """Reload the keyring (its source now names a new active key, old keys kept) and re-seal
        every stored key under the active one. Reads go on meanwhile: each row names its key."""
        try:
            keyring = self._load_keyring()
        except SecretError as exc:
            raise ServiceError(grpc.StatusCode.FAILED_PRECONDITION, "KEYRING_UNAVAILABLE", str(exc)) from None
        self._keyring = keyring

        def reseal_row(user_id: str, broker: str, sealed):  # type: ignore[no-untyped-def]
            return reseal(keyring, sealed, _aad(user_id, broker))

        resealed = await self._store.reseal_api_keys(reseal_row)
        return keyring.active_id, resealed


class TokenAuthority:
    def __init__(self, store: UserStore, clock: Callable[[], datetime] | None = None) -> None:
        self._store = store
        self._clock = clock or (lambda: datetime.now(timezone.utc))
        #: Called after a token is revoked (this service's own cache of checked tokens forgets
        #: them, so a revoked token is refused here at once, not after the cache's TTL).
        self.on_revoked: list[Callable[[], None]] = []

    async def create(self, kind: PrincipalKind, subject: str, description: str) -> tuple[str, TokenRecord]:
        token, token_id, secret_hash = token_text.mint()
        record = TokenRecord(
            token_id=token_id, kind=kind.value, subject=subject, secret_hash=secret_hash,
            description=description, created_at=self._clock(), revoked_at=None,
        )
        await self._store.add_token(record)
        return token, record

    async def revoke(self, token_id: str) -> bool:
        revoked = await self._store.revoke_token(token_id, self._clock())
        if revoked:
            for listener in self.on_revoked:
                listener()
        return revoked

    async def principal(self, token: str) -> Principal | None:
        """Who a token speaks for; None when it is malformed, unknown or revoked."""
        parsed = token_text.parse(token)
        if parsed is None:
            return None
        token_id, secret = parsed
        record = await self._store.get_token(token_id)
        if record is None or record.revoked_at or not token_text.verify(secret, record.secret_hash):
            return None
        kind = PrincipalKind(record.kind)
        subscribers: frozenset[str] = frozenset()
        if kind is PrincipalKind.STRATEGY:
            subscribers = frozenset(await self._store.subscribers(record.subject))
        return Principal(kind, record.subject, subscribers)


class Controls:
    """The kill switches, and the API keys' version. A kill switch changed here is pushed to
    watchers at once; other changes (another replica's, a key set) are noticed within `poll_s`."""

    def __init__(self, store: UserStore, poll_s: float = 1.0) -> None:
        self._store = store
        self._poll_s = poll_s
        self._changed = asyncio.Event()

    async def denial(self, user_id: str) -> Decision | None:
        return kill_switch_denial(await self._store.kill_switches(), user_id)

    async def set(self, user_id: str | None, on: bool, reason: str) -> KillSwitches:
        await self._store.set_kill_switch(user_id, on, reason)
        self.changed()
        return await self._store.kill_switches()

    def changed(self) -> None:
        """Something watchers follow changed here (a kill switch, an API key): tell them now."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def watch(self) -> AsyncIterator[tuple[KillSwitches, str]]:
        """(kill switches, API keys' version) now, then on every change of either."""
        last = None
        while True:
            changed = self._changed
            current = await self._store.controls()
            if current != last:
                yield current
                last = current
            await wait_set(changed, self._poll_s)
