"""AuthInterceptor on a real grpc.aio server: tokens, rules, all four call kinds, the client side."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from nija.common.v1 import common_pb2
from nija.router.v1 import router_pb2, router_pb2_grpc

from services.runtime.auth import (
    AuthInterceptor,
    Principal,
    PrincipalKind,
    Rule,
    current_principal,
    services_only,
    user_scoped,
)
from services.runtime.channels import open_channel
from services.runtime.errors import reason_of
from services.runtime.security import Security
from services.runtime.server import Listen, RunningServer

ROUTER_SERVICE = "nija.router.v1.RouterService"
QUOTE = f"/{ROUTER_SERVICE}/QuoteRoute"
SUBMIT = f"/{ROUTER_SERVICE}/SubmitSignal"

PRINCIPALS = {
    "alice-token": Principal(PrincipalKind.USER, "alice"),
    "momentum-token": Principal(PrincipalKind.STRATEGY, "momentum", frozenset({"bob"})),
    "admin-token": Principal(PrincipalKind.ADMIN, "root"),
    "router-token": Principal(PrincipalKind.SERVICE, "router"),
    "aggregator-token": Principal(PrincipalKind.SERVICE, "aggregator"),
}

RULES = {
    QUOTE: user_scoped(lambda r: r.signal.user_id, services=["aggregator"]),
    SUBMIT: user_scoped(lambda r: r.signal.user_id),
    # CancelSignal has no rule: refused whoever calls.
    "/test.Raw/Collect": services_only("router"),
    "/test.Raw/Chat": Rule(kinds=frozenset({PrincipalKind.USER})),
    "/test.Raw/Scoped": Rule(kinds=frozenset({PrincipalKind.USER}), user_of=lambda r: "alice"),
}


async def authenticate(token: str) -> Principal | None:
    if token == "boom":
        raise ConnectionError("permission service unreachable")
    return PRINCIPALS.get(token)


class FakeRouter(router_pb2_grpc.RouterServiceServicer):
    def __init__(self) -> None:
        self.seen: list[Principal | None] = []

    async def QuoteRoute(self, request: Any, context: Any) -> router_pb2.QuoteRouteResponse:
        self.seen.append(current_principal())
        return router_pb2.QuoteRouteResponse(routable=True)

    async def SubmitSignal(self, request: Any, context: Any) -> AsyncIterator[router_pb2.SubmitSignalResponse]:
        self.seen.append(current_principal())
        yield router_pb2.SubmitSignalResponse()


class RawHandlers(grpc.GenericRpcHandler):
    """Request-streaming methods (no proto in the repo has one), bytes in and out."""

    def __init__(self, seen: list[Principal | None]) -> None:
        self.seen = seen

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        seen = self.seen

        async def collect(requests: Any, context: Any) -> bytes:
            seen.append(current_principal())
            return b"".join([r async for r in requests])

        async def chat(requests: Any, context: Any) -> AsyncIterator[bytes]:
            seen.append(current_principal())
            async for r in requests:
                yield r.upper()

        handlers = {
            "/test.Raw/Collect": grpc.stream_unary_rpc_method_handler(collect),
            "/test.Raw/Scoped": grpc.stream_unary_rpc_method_handler(collect),
            "/test.Raw/Chat": grpc.stream_stream_rpc_method_handler(chat),
        }
        return handlers.get(details.method)


class AuthApp:
    service_names = (ROUTER_SERVICE,)

    def __init__(self) -> None:
        self.router = FakeRouter()
        self.interceptors = [AuthInterceptor(RULES, authenticate)]

    def register(self, server: grpc.aio.Server) -> None:
        router_pb2_grpc.add_RouterServiceServicer_to_server(self.router, server)
        server.add_generic_rpc_handlers((RawHandlers(self.router.seen),))

    async def start(self, health: Any) -> None:
        pass

    async def stop(self) -> None:
        pass


@pytest.fixture
async def server() -> AsyncIterator[RunningServer]:
    running = await RunningServer(AuthApp(), Listen(port=0)).start()
    yield running
    await running.stop(0)


@pytest.fixture
async def channel(server: RunningServer) -> AsyncIterator[grpc.aio.Channel]:
    async with open_channel(server.target) as ch:
        yield ch


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> router_pb2_grpc.RouterServiceStub:
    return router_pb2_grpc.RouterServiceStub(channel)


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


def quote(user: str) -> router_pb2.QuoteRouteRequest:
    return router_pb2.QuoteRouteRequest(signal=common_pb2.TradeSignal(user_id=user))


def submit(user: str) -> router_pb2.SubmitSignalRequest:
    return router_pb2.SubmitSignalRequest(signal=common_pb2.TradeSignal(user_id=user))


async def refused(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        result = call
        if hasattr(result, "__aiter__"):
            async for _ in result:
                pass
        else:
            await result
    return info.value


async def test_no_token_is_unauthenticated(stub) -> None:
    for call in (stub.QuoteRoute(quote("alice"), timeout=5), stub.SubmitSignal(submit("alice"), timeout=5)):
        err = await refused(call)
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED
        assert reason_of(err) == "MISSING_TOKEN"


@pytest.mark.parametrize("header", ["Bearer nope", "Basic alice-token", "Bearer ", "alice-token"])
async def test_unknown_or_malformed_token_is_unauthenticated(stub, header: str) -> None:
    err = await refused(stub.QuoteRoute(quote("alice"), metadata=(("authorization", header),), timeout=5))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert reason_of(err) == "INVALID_TOKEN"


async def test_bearer_scheme_is_case_insensitive(stub) -> None:
    response = await stub.QuoteRoute(quote("alice"), metadata=(("authorization", "bearer alice-token"),), timeout=5)
    assert response.routable


async def test_user_acts_for_itself_unary_and_streaming(server, stub) -> None:
    assert (await stub.QuoteRoute(quote("alice"), metadata=bearer("alice-token"), timeout=5)).routable
    responses = [r async for r in stub.SubmitSignal(submit("alice"), metadata=bearer("alice-token"), timeout=5)]
    assert len(responses) == 1
    assert server.app.router.seen == [PRINCIPALS["alice-token"]] * 2


async def test_user_cannot_act_for_another_user(server, stub, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="nija.security")
    for call in (
        stub.QuoteRoute(quote("bob"), metadata=bearer("alice-token"), timeout=5),
        stub.SubmitSignal(submit("bob"), metadata=bearer("alice-token"), timeout=5),
    ):
        err = await refused(call)
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        assert reason_of(err) == "ACTING_FOR_ANOTHER_USER"
        assert "user:alice" in err.details() and "bob" in err.details()
        assert "alice-token" not in err.details()
    assert server.app.router.seen == []  # the handler never ran
    events = [r for r in caplog.records if r.name == "nija.security"]
    assert sorted((r.method, r.principal, r.reason) for r in events) == [  # one event per refusal
        (QUOTE, "user:alice", "ACTING_FOR_ANOTHER_USER"),
        (SUBMIT, "user:alice", "ACTING_FOR_ANOTHER_USER"),
    ]
    assert all("alice-token" not in repr(vars(r)) for r in events)


async def test_strategy_acts_only_for_its_subscribers(stub) -> None:
    assert (await stub.QuoteRoute(quote("bob"), metadata=bearer("momentum-token"), timeout=5)).routable
    err = await refused(stub.QuoteRoute(quote("alice"), metadata=bearer("momentum-token"), timeout=5))
    assert (err.code(), reason_of(err)) == (grpc.StatusCode.PERMISSION_DENIED, "ACTING_FOR_ANOTHER_USER")


async def test_admin_acts_for_anyone(stub) -> None:
    assert (await stub.QuoteRoute(quote("carol"), metadata=bearer("admin-token"), timeout=5)).routable


async def test_only_the_rules_services_may_call(stub) -> None:
    assert (await stub.QuoteRoute(quote("carol"), metadata=bearer("aggregator-token"), timeout=5)).routable
    err = await refused(stub.QuoteRoute(quote("carol"), metadata=bearer("router-token"), timeout=5))
    assert (err.code(), reason_of(err)) == (grpc.StatusCode.PERMISSION_DENIED, "NOT_ALLOWED")
    # SubmitSignal names no services: no service may call it.
    err = await refused(stub.SubmitSignal(submit("carol"), metadata=bearer("aggregator-token"), timeout=5))
    assert (err.code(), reason_of(err)) == (grpc.StatusCode.PERMISSION_DENIED, "NOT_ALLOWED")


async def test_a_method_without_a_rule_is_refused(stub) -> None:
    cancel = router_pb2.CancelSignalRequest(user_id="alice", signal_id="s")
    err = await refused(stub.CancelSignal(cancel, metadata=bearer("admin-token"), timeout=5))
    assert (err.code(), reason_of(err)) == (grpc.StatusCode.PERMISSION_DENIED, "NO_ACCESS_RULE")


async def test_auth_upstream_down_is_unavailable_and_the_server_keeps_serving(stub, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="nija.security")
    err = await refused(stub.QuoteRoute(quote("alice"), metadata=bearer("boom"), timeout=5))
    assert (err.code(), reason_of(err)) == (grpc.StatusCode.UNAVAILABLE, "AUTH_UNAVAILABLE")
    assert [r.reason for r in caplog.records if r.name == "nija.security"] == ["AUTH_UNAVAILABLE"]
    assert (await stub.QuoteRoute(quote("alice"), metadata=bearer("alice-token"), timeout=5)).routable


async def test_health_and_reflection_need_no_token(channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    response = await health.Check(health_pb2.HealthCheckRequest(service=ROUTER_SERVICE), timeout=5)
    assert response.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    async for answer in reflection.ServerReflectionInfo(iter([request]), timeout=5):
        assert ROUTER_SERVICE in [s.name for s in answer.list_services_response.service]


async def test_request_streaming_methods_check_kinds(server, channel) -> None:
    collect = channel.stream_unary("/test.Raw/Collect")
    chat = channel.stream_stream("/test.Raw/Chat")
    assert await collect(iter([b"a", b"b"]), metadata=bearer("router-token"), timeout=5) == b"ab"
    assert [r async for r in chat(iter([b"hi"]), metadata=bearer("alice-token"), timeout=5)] == [b"HI"]
    assert server.app.router.seen == [PRINCIPALS["router-token"], PRINCIPALS["alice-token"]]

    err = await refused(collect(iter([b"a"]), metadata=bearer("alice-token"), timeout=5))
    assert (err.code(), reason_of(err)) == (grpc.StatusCode.PERMISSION_DENIED, "NOT_ALLOWED")
    err = await refused(chat(iter([b"a"]), timeout=5))
    assert (err.code(), reason_of(err)) == (grpc.StatusCode.UNAUTHENTICATED, "MISSING_TOKEN")


async def test_a_user_scoped_rule_on_a_request_stream_fails_closed(channel) -> None:
    scoped = channel.stream_unary("/test.Raw/Scoped")
    err = await refused(scoped(iter([b"a"]), metadata=bearer("alice-token"), timeout=5))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_open_channel_sends_the_processes_token_on_every_call_kind(server) -> None:
    async with open_channel(server.target, Security(token="alice-token")) as ch:
        stub = router_pb2_grpc.RouterServiceStub(ch)
        assert (await stub.QuoteRoute(quote("alice"), timeout=5)).routable
        assert len([r async for r in stub.SubmitSignal(submit("alice"), timeout=5)]) == 1
        chat = ch.stream_stream("/test.Raw/Chat")
        assert [r async for r in chat(iter([b"x"]), timeout=5)] == [b"X"]
        # A caller's own authorization wins (e.g. a gateway forwarding the end user's token).
        assert (await stub.QuoteRoute(quote("bob"), metadata=bearer("momentum-token"), timeout=5)).routable
    async with open_channel(server.target, Security(token="router-token")) as ch:
        assert await ch.stream_unary("/test.Raw/Collect")(iter([b"z"]), timeout=5) == b"z"
