"""The permission service as an App for services.runtime.server."""

from __future__ import annotations

import dataclasses
import logging

import grpc
from nija.permission.v1 import permission_pb2_grpc

from services.permission.demo import DEMO_USERS
from services.permission.servicer import PermissionServicer
from services.permission.store import UserStore
from services.runtime.server import Health

log = logging.getLogger(__name__)

SERVICE_NAME = "nija.permission.v1.PermissionService"


@dataclasses.dataclass(frozen=True)
class Config:
    database_path: str = "var/permission.db"
    #: Seed the demo users (services.permission.demo) when the users table is empty.
    seed_demo_users: bool = True


class PermissionApp:
    service_names = (SERVICE_NAME,)

    def __init__(self, config: Config) -> None:
        self.config = config
        self.store = UserStore(config.database_path)
        self._servicer = PermissionServicer(self.store)

    def register(self, server: grpc.aio.Server) -> None:
        permission_pb2_grpc.add_PermissionServiceServicer_to_server(self._servicer, server)

    async def start(self, health: Health) -> None:
        log.info("starting", extra={"config": dataclasses.asdict(self.config)})
        await self.store.open()
        if self.config.seed_demo_users:
            seeded = await self.store.seed_if_empty(DEMO_USERS)
            if seeded:
                log.info("seeded demo users", extra={"users": [u.user_id for u in DEMO_USERS]})

    async def stop(self) -> None:
        await self.store.close()


def build_app(config: Config) -> PermissionApp:
    return PermissionApp(config)
