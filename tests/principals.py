"""Fixed tokens for tests of one service alone (no permission service behind it).

`authenticate` resolves them like the permission service would; `channel_as(target, who)` opens a
channel that presents one of them.
"""

from __future__ import annotations

import grpc

from services.runtime.auth import Principal, PrincipalKind
from services.runtime.channels import open_channel
from services.runtime.security import Security

PRINCIPALS = {
    "tok-router": Principal(PrincipalKind.SERVICE, "router"),
    "tok-aggregator": Principal(PrincipalKind.SERVICE, "aggregator"),
    "tok-executor-binance": Principal(PrincipalKind.SERVICE, "executor-binance"),
    "tok-executor-kraken": Principal(PrincipalKind.SERVICE, "executor-kraken"),
    "tok-admin": Principal(PrincipalKind.ADMIN, "operator"),
    "tok-alice": Principal(PrincipalKind.USER, "alice"),
    "tok-bob": Principal(PrincipalKind.USER, "bob"),
}


async def authenticate(token: str) -> Principal | None:
    return PRINCIPALS.get(token)


def channel_as(target: str, who: str) -> grpc.aio.Channel:
    """`who`: a key of PRINCIPALS without the "tok-" prefix."""
    return open_channel(target, Security(token=f"tok-{who}"))
