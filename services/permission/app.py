"""The permission service as an App for services.runtime.server."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping

import grpc
from nija.permission.v1 import permission_pb2_grpc

from services.domain.brokers import BROKERS
from services.permission.accounts import Accounts, Controls, TokenAuthority
from services.permission.demo import DEMO_USERS
from services.permission.keyring import load_keyring
from services.permission.servicer import AdminServicer, PermissionServicer
from services.permission.store import UserStore
from services.runtime.auth import (
    Authenticate,
    AuthInterceptor,
    CachingAuthenticator,
    PrincipalKind,
    Rule,
    admin_only,
    services_only,
    user_scoped,
)
from services.runtime.config import redact_url
from services.runtime.security import Security
from services.runtime.server import Health

log = logging.getLogger(__name__)

SERVICE_NAME = "nija.permission.v1.PermissionService"
ADMIN_SERVICE_NAME = "nija.permission.v1.AdminService"

_EXECUTORS = tuple(f"executor-{b}" for b in BROKERS)
_SERVICES = ("router", "aggregator", *_EXECUTORS)

ACCESS: dict[str, Rule] = {
    f"/{SERVICE_NAME}/CheckTrade": user_scoped(lambda r: r.user_id, services=("router",)),
    f"/{SERVICE_NAME}/ReserveTrade": services_only("router"),
    f"/{SERVICE_NAME}/ReleaseReservation": services_only("router"),
    f"/{SERVICE_NAME}/ApplyExecution": services_only("aggregator"),
    f"/{SERVICE_NAME}/ApplyExecutions": services_only("aggregator"),
    f"/{SERVICE_NAME}/GetUserPermissions": user_scoped(lambda r: r.user_id, services=_SERVICES),
    f"/{SERVICE_NAME}/GetPositions": user_scoped(lambda r: r.user_id, services=_SERVICES),
    f"/{SERVICE_NAME}/Authenticate": services_only(*_SERVICES),
    # Each executor for its own broker only: checked again by the servicer against the request.
    f"/{SERVICE_NAME}/GetCredentials": services_only(*_EXECUTORS),
    # Executors stop trading on a kill switch; the aggregator notifies users' webhooks of it.
    f"/{SERVICE_NAME}/WatchControls": services_only(*_EXECUTORS, "aggregator"),
    # Who trades a strategy's signal, and how much: the router fans signals out; admins look.
    f"/{SERVICE_NAME}/ListSubscriptions": Rule(
        frozenset({PrincipalKind.SERVICE, PrincipalKind.ADMIN}), frozenset({"router"})
    ),
    **{
        f"/{ADMIN_SERVICE_NAME}/{method}": admin_only()
        for method in (
            "PutUser", "ListUsers", "SetUserEnabled", "SetLimits", "SetKillSwitch", "CreateToken",
            "ListTokens", "RevokeToken", "SetApiKeys", "ListApiKeys", "DeleteApiKeys", "RotateMasterKey",
            "SetSubscription",
        )
    },
}


@dataclasses.dataclass(frozen=True)
class Config:
    database_path: str = "var/permission.db"
    #: PostgreSQL (postgresql://...) instead of the SQLite file; `nija serve` takes it from
    #: NIJA_DATABASE_URL.
    database_url: str = ""
    #: The master key file used when no other source is configured (Vault, NIJA_MASTER_KEYS,
    #: NIJA_MASTER_KEY_FILE); created with a fresh key on first start. Default: beside the database.
    master_key_file: str = ""
    #: Seed the demo users (services.permission.demo) when the users table is empty.
    seed_demo_users: bool = True
    #: How often kill switches set by another replica are looked for.
    controls_poll_s: float = 1.0

    @property
    def database(self) -> str:
        return self.database_url or self.database_path

    @property
    def key_file(self) -> str:
        return self.master_key_file or os.path.join(os.path.dirname(self.database_path) or ".", "master.keys")


class PermissionApp:
    service_names = (SERVICE_NAME, ADMIN_SERVICE_NAME)

    def __init__(
        self,
        config: Config,
        security: Security,
        authenticate: Authenticate | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        environ = dict(os.environ if environ is None else environ)
        self.store = UserStore(config.database)
        self.accounts = Accounts(self.store, lambda: load_keyring(environ, default_file=config.key_file))
        self.tokens = TokenAuthority(self.store)
        self.controls = Controls(self.store, poll_s=config.controls_poll_s)
        self._servicer = PermissionServicer(self.store, self.accounts, self.tokens, self.controls)
        self._admin = AdminServicer(self.store, self.accounts, self.tokens, self.controls)
        # This service is the token authority: it checks tokens against its own database.
        if authenticate is None:
            cache = CachingAuthenticator(self.tokens.principal, ttl_s=1.0)
            self.tokens.on_revoked.append(cache.clear)
            authenticate = cache
        self.interceptors = (AuthInterceptor(ACCESS, authenticate),)

    def register(self, server: grpc.aio.Server) -> None:
        permission_pb2_grpc.add_PermissionServiceServicer_to_server(self._servicer, server)
        permission_pb2_grpc.add_AdminServiceServicer_to_server(self._admin, server)

    async def start(self, health: Health) -> None:
        log.info("starting", extra={"config": dataclasses.asdict(self.config) | {"database_url": redact_url(self.config.database_url)}})
        self.accounts.open()
        await self.store.open()
        if self.config.seed_demo_users:
            seeded = await self.store.seed_if_empty(DEMO_USERS)
            if seeded:
                log.info("seeded demo users", extra={"users": [u.user_id for u in DEMO_USERS]})

    async def stop(self) -> None:
        await self.store.close()


def build_app(config: Config, security: Security, authenticate: Authenticate | None = None) -> PermissionApp:
    return PermissionApp(config, security, authenticate)
