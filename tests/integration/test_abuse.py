"""Every abuse case, listed (issue 11, acceptance 4): each is denied with its status and reason,
and logged once as a security event on the `nija.security` logger.

`ABUSES` is the list. Each entry is one attempt by someone on the whole in-process mesh (real
gRPC servers on port 0, real tokens minted by the permission service). The case table of
test_access.py covers who may call what, method by method; here each case is an attack as a
desk would describe it, end to end.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable

import grpc
import pytest
from nija.aggregator.v1 import aggregator_pb2, aggregator_pb2_grpc
from nija.common.v1 import common_pb2
from nija.permission.v1 import permission_pb2, permission_pb2_grpc
from nija.router.v1 import router_pb2, router_pb2_grpc

from services.runtime.errors import reason_of
from tests.harness import InProcessMesh, signal
from tests.integration.test_access import CASES, call_case, create_token

C = grpc.StatusCode
DENIED = (C.PERMISSION_DENIED, "ACTING_FOR_ANOTHER_USER")

#: What an attempt saw: (status, ErrorInfo reason) of each call it made.
Seen = list[tuple[grpc.StatusCode, str]]


@dataclasses.dataclass(frozen=True)
class Abuse:
    name: str
    attempt: Callable[[InProcessMesh], Awaitable[Seen]]
    #: Every call of the attempt must end with one of these.
    expected: frozenset[tuple[grpc.StatusCode, str]]


async def _status(call: Awaitable[object]) -> tuple[grpc.StatusCode, str]:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code(), reason_of(exc)
    return C.OK, ""


def _as(mesh: InProcessMesh, service: str, token: str):  # type: ignore[no-untyped-def]
    stubs = {
        "router": router_pb2_grpc.RouterServiceStub,
        "aggregator": aggregator_pb2_grpc.AggregatorServiceStub,
        "permission": permission_pb2_grpc.PermissionServiceStub,
        "admin": permission_pb2_grpc.AdminServiceStub,
    }
    return stubs[service](mesh.channel("permission" if service == "admin" else service, token))


async def _first(stream) -> None:  # type: ignore[no-untyped-def]
    async for _ in stream:
        return


# ---- the attempts --------------------------------------------------------------------------------


async def cross_user_on_every_rpc(mesh: InProcessMesh) -> Seen:
    """Bob, a user, calls every RPC of every service acting for Alice (test_access.CASES)."""
    return [(await call_case(mesh, case, mesh.tokens.users["bob"]), "") for case in CASES]


async def reading_anothers_api_keys(mesh: InProcessMesh) -> Seen:
    bob = mesh.tokens.users["bob"]
    return [
        await _status(_as(mesh, "permission", bob).GetCredentials(
            permission_pb2.GetCredentialsRequest(user_id="alice", broker="binance"))),
        await _status(_as(mesh, "admin", bob).ListApiKeys(permission_pb2.ListApiKeysRequest(user_id="alice"))),
    ]


async def an_executor_reading_keys_of_another_broker(mesh: InProcessMesh) -> Seen:
    kraken = mesh.tokens.services["executor-kraken"]
    return [await _status(_as(mesh, "permission", kraken).GetCredentials(
        permission_pb2.GetCredentialsRequest(user_id="alice", broker="binance")))]


async def reading_anothers_positions_orders_and_fills(mesh: InProcessMesh) -> Seen:
    bob = mesh.tokens.users["bob"]
    aggregator = _as(mesh, "aggregator", bob)
    return [
        await _status(_as(mesh, "permission", bob).GetPositions(permission_pb2.GetPositionsRequest(user_id="alice"))),
        await _status(aggregator.ListOrders(aggregator_pb2.ListOrdersRequest(user_id="alice"))),
        await _status(aggregator.ListFills(aggregator_pb2.ListFillsRequest(user_id="alice", signal_id="x"))),
        await _status(aggregator.GetDailySummary(aggregator_pb2.GetDailySummaryRequest(user_id="alice"))),
    ]


async def watching_anothers_update_stream(mesh: InProcessMesh) -> Seen:
    bob = mesh.tokens.users["bob"]
    aggregator = _as(mesh, "aggregator", bob)
    return [
        await _status(_first(aggregator.WatchUpdates(aggregator_pb2.WatchUpdatesRequest(user_id="alice"), timeout=5))),
        await _status(_first(aggregator.WatchUpdates(
            aggregator_pb2.WatchUpdatesRequest(user_id="alice", signal_id="x"), timeout=5))),
    ]


async def trading_and_cancelling_for_another(mesh: InProcessMesh) -> Seen:
    bob = mesh.tokens.users["bob"]
    router = _as(mesh, "router", bob)
    seen = [
        await _status(_first(router.SubmitSignal(
            router_pb2.SubmitSignalRequest(signal=signal(user="alice", signal_id="abuse-1")), timeout=10))),
        await _status(router.CancelSignal(router_pb2.CancelSignalRequest(user_id="alice", signal_id="abuse-1"))),
    ]
    # On a request stream the call goes on; the one signal for Alice is refused in the stream.
    call = router.SubmitSignals(iter([router_pb2.SubmitSignalsRequest(signal=signal(user="alice", signal_id="abuse-2"))]),
                                timeout=10)
    async for response in call:
        if response.HasField("refusal"):
            refusal = response.refusal.refusal
            seen.append((next(c for c in C if c.value[0] == refusal.code), refusal.reason))
            break
    else:
        seen.append((C.OK, ""))
    return seen


async def a_strategy_trading_for_a_non_subscriber(mesh: InProcessMesh) -> Seen:
    token = await create_token(mesh, permission_pb2.PRINCIPAL_KIND_STRATEGY, "apex")  # nobody subscribed
    router = _as(mesh, "router", token)
    return [
        await _status(_first(router.SubmitSignal(
            router_pb2.SubmitSignalRequest(signal=signal(user="alice", signal_id="apex-1")), timeout=10))),
        await _status(router.QuoteRoute(router_pb2.QuoteRouteRequest(signal=signal(user="alice", signal_id="apex-1")))),
    ]


async def a_user_calling_admin_and_service_rpcs(mesh: InProcessMesh) -> Seen:
    bob = mesh.tokens.users["bob"]
    return [
        await _status(_as(mesh, "admin", bob).SetKillSwitch(permission_pb2.SetKillSwitchRequest(user_id="bob", on=False))),
        await _status(_as(mesh, "admin", bob).CreateToken(permission_pb2.CreateTokenRequest(
            kind=permission_pb2.PRINCIPAL_KIND_ADMIN, subject="bob"))),
        await _status(_as(mesh, "permission", bob).ReserveTrade(permission_pb2.ReserveTradeRequest(user_id="bob"))),
        await _status(_as(mesh, "aggregator", bob).RecordUpdate(aggregator_pb2.RecordUpdateRequest(
            update=common_pb2.ExecutionUpdate(user_id="bob", signal_id="x", status=common_pb2.EXECUTION_STATUS_FILLED)))),
    ]


async def replaying_a_revoked_token(mesh: InProcessMesh) -> Seen:
    """Bob's token works, is revoked, and is replayed: the permission service, which revoked it,
    refuses it at once; the router and aggregator, which cache a token's check for 2 s, within
    that (polled, not slept)."""
    token = await create_token(mesh, permission_pb2.PRINCIPAL_KIND_USER, "bob")
    positions = permission_pb2.GetPositionsRequest(user_id="bob")
    order = aggregator_pb2.GetOrderRequest(user_id="bob", signal_id="never")
    quote = router_pb2.QuoteRouteRequest(signal=signal(user="bob", signal_id="q-1"))
    assert (await _status(_as(mesh, "permission", token).GetPositions(positions)))[0] is C.OK
    assert (await _status(_as(mesh, "aggregator", token).GetOrder(order)))[0] is C.NOT_FOUND  # let in
    assert (await _status(_as(mesh, "router", token).QuoteRoute(quote)))[0] is C.OK

    admin = permission_pb2_grpc.AdminServiceStub(mesh.channel("permission"))
    listed = await admin.ListTokens(permission_pb2.ListTokensRequest(subject="bob"))
    newest = max(listed.tokens, key=lambda t: t.created_at.ToNanoseconds())
    await admin.RevokeToken(permission_pb2.RevokeTokenRequest(token_id=newest.token_id))

    seen = [await _status(_as(mesh, "permission", token).GetPositions(positions))]
    for replay in (lambda: _as(mesh, "aggregator", token).GetOrder(order),
                   lambda: _as(mesh, "router", token).QuoteRoute(quote)):
        seen.append(await _refused_within(replay, 5.0))
    return seen


async def a_forged_token(mesh: InProcessMesh) -> Seen:
    forged = mesh.tokens.users["bob"][:-4] + ("AAAA" if not mesh.tokens.users["bob"].endswith("AAAA") else "BBBB")
    return [
        await _status(_as(mesh, "permission", forged).GetPositions(permission_pb2.GetPositionsRequest(user_id="bob"))),
        await _status(_as(mesh, "router", forged).QuoteRoute(router_pb2.QuoteRouteRequest(signal=signal(user="bob")))),
    ]


async def _refused_within(make_call: Callable[[], Awaitable[object]], limit_s: float) -> tuple[grpc.StatusCode, str]:
    """The replay's answer once it is refused (polled: the services' token cache lives 2 s)."""
    import asyncio

    loop = asyncio.get_running_loop()
    give_up = loop.time() + limit_s
    while True:
        seen = await _status(make_call())
        if seen[0] is not C.OK and seen[0] is not C.NOT_FOUND or loop.time() >= give_up:
            return seen
        await asyncio.sleep(0.1)


ABUSES = [
    Abuse("a user acting for another user, on every RPC of every service", cross_user_on_every_rpc,
          frozenset({(C.PERMISSION_DENIED, "")})),
    Abuse("a user reading another user's API keys", reading_anothers_api_keys,
          frozenset({(C.PERMISSION_DENIED, "NOT_ALLOWED")})),
    Abuse("an executor reading keys for another broker", an_executor_reading_keys_of_another_broker,
          frozenset({(C.PERMISSION_DENIED, "KEYS_FOR_OWN_BROKER_ONLY")})),
    Abuse("a user reading another user's positions, orders, fills and summary",
          reading_anothers_positions_orders_and_fills, frozenset({DENIED})),
    Abuse("a user watching another user's update streams", watching_anothers_update_stream, frozenset({DENIED})),
    Abuse("a user trading for or cancelling another user's order (unary and stream)",
          trading_and_cancelling_for_another, frozenset({DENIED})),
    Abuse("a strategy trading for a user who is not its subscriber", a_strategy_trading_for_a_non_subscriber,
          frozenset({DENIED})),
    Abuse("a user calling admin and service-only RPCs", a_user_calling_admin_and_service_rpcs,
          frozenset({(C.PERMISSION_DENIED, "NOT_ALLOWED")})),
    Abuse("a revoked token replayed", replaying_a_revoked_token, frozenset({(C.UNAUTHENTICATED, "INVALID_TOKEN")})),
    Abuse("a forged token", a_forged_token, frozenset({(C.UNAUTHENTICATED, "INVALID_TOKEN")})),
]


@pytest.mark.parametrize("abuse", ABUSES, ids=[a.name for a in ABUSES])
async def test_every_abuse_is_denied_and_logged_as_a_security_event(
    mesh: InProcessMesh, abuse: Abuse, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="nija.security"):
        seen = await abuse.attempt(mesh)
    assert seen, abuse.name
    for code, reason in seen:
        # The cross-user table reports codes only (its reasons are asserted by test_access.py).
        assert (code, reason) in abuse.expected or (code, "") in abuse.expected, f"{abuse.name}: {seen}"
    events = [r for r in caplog.records if r.name == "nija.security"]
    assert len(events) >= len(seen), f"{abuse.name}: {len(seen)} refusals, {len(events)} security events"
