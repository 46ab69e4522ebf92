"""Who may call what, over every RPC of every mesh service (issue 5, acceptance 1).

The table below names every method the mesh serves; a test checks that it is complete, so a new
RPC cannot be added without deciding (and testing) who may call it.
"""

from __future__ import annotations

import dataclasses

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory
from nija.aggregator.v1 import aggregator_pb2
from nija.common.v1 import common_pb2
from nija.executor.v1 import executor_pb2
from nija.permission.v1 import permission_pb2, permission_pb2_grpc
from nija.router.v1 import router_pb2, router_pb2_grpc

from services.aggregator import app as aggregator_app
from services.executor import app as executor_app
from services.permission import app as permission_app
from services.router import app as router_app
from services.runtime.errors import reason_of
from tests.harness import InProcessMesh, signal

SERVICES = {
    "router": router_app.SERVICE_NAME,
    "aggregator": aggregator_app.SERVICE_NAME,
    "permission": permission_app.SERVICE_NAME,
    "permission-admin": permission_app.ADMIN_SERVICE_NAME,
    "executor-binance": executor_app.SERVICE_NAME,
}
SERVER_OF = {"permission-admin": "permission"}


@dataclasses.dataclass(frozen=True)
class Case:
    service: str  # key of SERVICES
    method: str
    #: The request as a user would send it, acting for `user`; None for methods with no user.
    request: object
    #: Who may call it: "people" (users for themselves, strategies for subscribers, admins),
    #: "admin", "services", or "operators" (services and admins).
    audience: str


def _alice_signal() -> common_pb2.TradeSignal:
    return signal(user="alice", signal_id="access-1")


CASES = [
    Case("router", "SubmitSignal", router_pb2.SubmitSignalRequest(signal=_alice_signal()), "people"),
    Case("router", "QuoteRoute", router_pb2.QuoteRouteRequest(signal=_alice_signal()), "people"),
    Case("router", "CancelSignal", router_pb2.CancelSignalRequest(user_id="alice", signal_id="x"), "people"),
    # Its caller is checked by the interceptor, each signal's user in the stream (a refusal message).
    Case("router", "SubmitSignals", router_pb2.SubmitSignalsRequest(signal=_alice_signal()), "people"),
    # Strategies (for themselves, tests/integration/test_fanout.py) and admins; never users or services.
    Case("router", "SubmitStrategySignal",
         router_pb2.SubmitStrategySignalRequest(signal=router_pb2.StrategySignal(strategy_id="apex")), "admin"),
    Case("aggregator", "WatchUpdates", aggregator_pb2.WatchUpdatesRequest(user_id="alice"), "people"),
    Case("aggregator", "GetOrder", aggregator_pb2.GetOrderRequest(user_id="alice", signal_id="x"), "people"),
    Case("aggregator", "ListOrders", aggregator_pb2.ListOrdersRequest(user_id="alice"), "people"),
    Case("aggregator", "ListFills", aggregator_pb2.ListFillsRequest(user_id="alice", signal_id="x"), "people"),
    Case("aggregator", "GetDailySummary", aggregator_pb2.GetDailySummaryRequest(user_id="alice"), "people"),
    Case("aggregator", "SetWebhook", aggregator_pb2.SetWebhookRequest(user_id="alice"), "people"),
    Case("aggregator", "ListWebhooks", aggregator_pb2.ListWebhooksRequest(user_id="alice"), "people"),
    Case("aggregator", "DeleteWebhook", aggregator_pb2.DeleteWebhookRequest(user_id="alice", webhook_id="x"), "people"),
    Case("aggregator", "ListDeliveries", aggregator_pb2.ListDeliveriesRequest(user_id="alice"), "people"),
    Case("aggregator", "CreateOrder", aggregator_pb2.CreateOrderRequest(signal=_alice_signal()), "services"),
    Case("aggregator", "RecordUpdate", aggregator_pb2.RecordUpdateRequest(), "services"),
    Case("aggregator", "RecordUpdates", aggregator_pb2.RecordUpdatesRequest(), "services"),
    Case("permission", "CheckTrade", permission_pb2.CheckTradeRequest(user_id="alice", pair="BTC-USD", side=1, size_usd="1"), "people"),
    Case("permission", "GetUserPermissions", permission_pb2.GetUserPermissionsRequest(user_id="alice"), "people"),
    Case("permission", "GetPositions", permission_pb2.GetPositionsRequest(user_id="alice"), "people"),
    Case("permission", "ReserveTrade", permission_pb2.ReserveTradeRequest(user_id="alice"), "services"),
    Case("permission", "ReleaseReservation", permission_pb2.ReleaseReservationRequest(user_id="alice"), "services"),
    Case("permission", "ApplyExecution", permission_pb2.ApplyExecutionRequest(), "services"),
    Case("permission", "ApplyExecutions", permission_pb2.ApplyExecutionsRequest(), "services"),
    Case("permission", "Authenticate", permission_pb2.AuthenticateRequest(token="x"), "services"),
    Case("permission", "GetCredentials", permission_pb2.GetCredentialsRequest(user_id="alice", broker="binance"), "services"),
    Case("permission", "WatchControls", permission_pb2.WatchControlsRequest(), "services"),
    # The router fanning a strategy's signal out, and admins (no other service: see
    # test_subscriptions.test_only_the_router_and_admins_list_subscriptions).
    Case("permission", "ListSubscriptions", permission_pb2.ListSubscriptionsRequest(strategy_id="apex"), "operators"),
    *[
        Case("permission-admin", m.name, message_factory.GetMessageClass(m.input_type)(), "admin")
        for m in descriptor_pool.Default().FindServiceByName(permission_app.ADMIN_SERVICE_NAME).methods
    ],
    Case("executor-binance", "Execute", executor_pb2.ExecuteRequest(signal=_alice_signal()), "services"),
    Case("executor-binance", "CancelOrder", executor_pb2.CancelOrderRequest(user_id="alice"), "services"),
    Case("executor-binance", "GetExecutorInfo", executor_pb2.GetExecutorInfoRequest(), "operators"),
    Case("executor-binance", "CheckAccount", executor_pb2.CheckAccountRequest(user_id="alice"), "admin"),
    Case("executor-binance", "WatchExecutorInfo", executor_pb2.WatchExecutorInfoRequest(), "operators"),
]


def _ids(case: Case) -> str:
    return f"{case.service}.{case.method}"


async def call_case(mesh: InProcessMesh, case: Case, token: str | None, request: object | None = None) -> grpc.StatusCode:
    """One call with `token` (None: no authorization metadata at all); the status it ended with."""
    server = mesh.servers[SERVER_OF.get(case.service, case.service)]
    method = mesh_method(case)
    request = request if request is not None else case.request
    async with grpc.aio.insecure_channel(server.target) as channel:
        metadata = (("authorization", f"Bearer {token}"),) if token else None
        kwargs = {"request_serializer": type(request).SerializeToString, "response_deserializer": None}
        try:
            if method.server_streaming:
                # A stream that was let in may have nothing to say yet: its deadline is the answer.
                call = channel.unary_stream(f"/{method.containing_service.full_name}/{method.name}", **kwargs)(
                    request, metadata=metadata, timeout=1
                )
                async for response in call:
                    if method.client_streaming:
                        return _refusal_code(method, response)
                    break  # admitted: one response is enough
                return grpc.StatusCode.OK
            await channel.unary_unary(f"/{method.containing_service.full_name}/{method.name}", **kwargs)(
                request, metadata=metadata, timeout=5
            )
            return grpc.StatusCode.OK
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                assert reason_of(exc), f"{_ids(case)}: {exc.code().name} without an ErrorInfo reason"
            return exc.code()


def _refusal_code(method, response: bytes) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    """A request stream refuses one message, not the call (SubmitSignals): the first response's
    refusal code, else OK."""
    message = message_factory.GetMessageClass(method.output_type).FromString(response)
    if "refusal" not in message.DESCRIPTOR.fields_by_name or not message.HasField("refusal"):
        return grpc.StatusCode.OK
    refusal = message.refusal
    if "refusal" in refusal.DESCRIPTOR.fields_by_name:  # a SignalRefusal around its Refusal
        refusal = refusal.refusal
    assert refusal.reason, f"{method.name}: refusal {refusal.code} without a reason"
    return next(code for code in grpc.StatusCode if code.value[0] == refusal.code)


def mesh_method(case: Case):  # type: ignore[no-untyped-def]
    return descriptor_pool.Default().FindServiceByName(SERVICES[case.service]).methods_by_name[case.method]


def test_the_table_covers_every_rpc_of_every_mesh_service() -> None:
    covered = {(SERVICES[c.service], c.method) for c in CASES}
    served = {
        (name, m.name)
        for name in SERVICES.values()
        for m in descriptor_pool.Default().FindServiceByName(name).methods
    }
    assert covered == served
    # ... and every app has a rule for each of its methods (no method is reachable by accident).
    for module in (router_app, aggregator_app, permission_app, executor_app):
        for name in getattr(module, "ADMIN_SERVICE_NAME", None), module.SERVICE_NAME:
            if name is None:
                continue
            for m in descriptor_pool.Default().FindServiceByName(name).methods:
                assert f"/{name}/{m.name}" in module.ACCESS, f"{name}/{m.name} has no access rule"


async def test_no_token_and_bad_tokens_are_unauthenticated_on_every_rpc(mesh: InProcessMesh) -> None:
    revoked_token = await create_token(mesh, permission_pb2.PRINCIPAL_KIND_USER, "bob")
    admin = permission_pb2_grpc.AdminServiceStub(mesh.channel("permission"))
    listed = await admin.ListTokens(permission_pb2.ListTokensRequest(subject="bob"))
    newest = max(listed.tokens, key=lambda t: t.created_at.ToNanoseconds())
    await admin.RevokeToken(permission_pb2.RevokeTokenRequest(token_id=newest.token_id))
    forged = mesh.tokens.users["bob"][:-4] + "AAAA"
    for case in CASES:
        for token in (None, "", "not-a-token", forged, revoked_token):
            code = await call_case(mesh, case, token)
            assert code == grpc.StatusCode.UNAUTHENTICATED, f"{_ids(case)} with token {token!r:.12}: {code}"


async def test_a_user_acting_for_another_user_is_denied_and_for_itself_is_let_through(mesh: InProcessMesh) -> None:
    alice, bob = mesh.tokens.users["alice"], mesh.tokens.users["bob"]
    for case in CASES:
        code = await call_case(mesh, case, bob)
        assert code == grpc.StatusCode.PERMISSION_DENIED, f"bob calling {_ids(case)} for alice: {code}"
        own = await call_case(mesh, case, alice)
        if case.audience == "people":
            # Past the access check (what follows, e.g. NOT_FOUND for an unknown order, is the method's).
            assert own not in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED), _ids(case)
        else:
            assert own == grpc.StatusCode.PERMISSION_DENIED, f"a user calling {_ids(case)}: {own}"


async def test_admin_reaches_admin_and_people_rpcs_but_not_service_ones(mesh: InProcessMesh) -> None:
    for case in CASES:
        code = await call_case(mesh, case, mesh.tokens.admin)
        if case.audience == "services":
            assert code == grpc.StatusCode.PERMISSION_DENIED, _ids(case)
        else:
            assert code not in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED), _ids(case)


async def test_a_strategy_trades_only_for_its_subscribers(mesh: InProcessMesh) -> None:
    admin = permission_pb2_grpc.AdminServiceStub(mesh.channel("permission"))
    await admin.SetSubscription(permission_pb2.SetSubscriptionRequest(strategy_id="apex", user_id="bob", subscribed=True))
    token = await create_token(mesh, permission_pb2.PRINCIPAL_KIND_STRATEGY, "apex")
    router = router_pb2_grpc.RouterServiceStub(mesh.channel("router", token))

    updates = [r.update async for r in router.SubmitSignal(
        router_pb2.SubmitSignalRequest(signal=signal(user="bob", pair="ETH-USD", signal_id="apex-1")), timeout=30)]
    assert common_pb2.ExecutionStatus.Name(updates[-1].status) == "EXECUTION_STATUS_FILLED"

    for case in [c for c in CASES if c.audience == "people"]:
        code = await call_case(mesh, case, token)  # every one of them acts for alice, not subscribed
        assert code == grpc.StatusCode.PERMISSION_DENIED, _ids(case)

    # Unsubscribed: denied from then on (within the authenticator's cache lifetime, ~2 s).
    await admin.SetSubscription(permission_pb2.SetSubscriptionRequest(strategy_id="apex", user_id="bob", subscribed=False))
    fresh = await create_token(mesh, permission_pb2.PRINCIPAL_KIND_STRATEGY, "apex")
    quote = router_pb2.QuoteRouteRequest(signal=signal(user="bob", signal_id="apex-2"))
    code = await call_case(mesh, Case("router", "QuoteRoute", quote, "people"), fresh)
    assert code == grpc.StatusCode.PERMISSION_DENIED


async def test_executors_read_keys_only_for_their_own_broker(mesh: InProcessMesh) -> None:
    admin = permission_pb2_grpc.AdminServiceStub(mesh.channel("permission"))
    await admin.SetApiKeys(permission_pb2.SetApiKeysRequest(
        user_id="alice", broker="binance",
        credentials=permission_pb2.ApiCredentials(api_key="AK-binance-alice", api_secret="s3cr3t-binance-alice")))
    request = permission_pb2.GetCredentialsRequest(user_id="alice", broker="binance")
    for caller in ("router", "aggregator", "executor-kraken"):
        stub = permission_pb2_grpc.PermissionServiceStub(mesh.channel("permission", mesh.tokens.services[caller]))
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await stub.GetCredentials(request)
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED, caller
    own = permission_pb2_grpc.PermissionServiceStub(mesh.channel("permission", mesh.tokens.services["executor-binance"]))
    response = await own.GetCredentials(request)
    assert response.credentials.api_key == "AK-binance-alice"
    # No admin (or anyone else) ever reads a key back.
    listed = await admin.ListApiKeys(permission_pb2.ListApiKeysRequest(user_id="alice"))
    assert "s3cr3t" not in str(listed) and "AK-binance" not in str(listed)


async def create_token(mesh: InProcessMesh, kind: int, subject: str) -> str:
    admin = permission_pb2_grpc.AdminServiceStub(mesh.channel("permission"))
    response = await admin.CreateToken(permission_pb2.CreateTokenRequest(kind=kind, subject=subject))
    return response.token

