import dataclasses
from decimal import Decimal
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nija.common.v1 import common_pb2
from nija.permission.v1 import permission_pb2 as pb
from nija.permission.v1 import permission_pb2_grpc

from services.domain.brokers import BROKERS
from services.permission.app import Config, build_app
from services.permission.demo import ALICE, BOB
from services.permission.permissions import RoutingPolicy, RoutingPreferences
from services.permission.servicer import POLICY_TO_PB, _user, preferences_to_pb
from services.permission.store import UserStore
from services.runtime.errors import ServiceError, reason_of
from services.runtime.security import Security
from services.runtime.server import Listen, RunningServer
from tests.principals import authenticate, channel_as
from tests.unit.test_permission_store import create_v1_database


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "var" / "permission.db")


@pytest.fixture
async def server(db_path: str):
    running = await RunningServer(build_app(Config(database_path=db_path), Security(), authenticate), Listen(port=0)).start()
    yield running
    await running.stop(0)


@pytest.fixture
async def channel(server: RunningServer):
    async with channel_as(server.target, "router") as channel:
        yield channel


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> permission_pb2_grpc.PermissionServiceStub:
    return permission_pb2_grpc.PermissionServiceStub(channel)


def check(user_id: str = "alice", pair: str = "BTC-USD", size: str = "100", side: int = common_pb2.SIDE_BUY):
    return pb.CheckTradeRequest(user_id=user_id, pair=pair, side=side, size_usd=size, signal_id="sig-1")


async def test_allowed_trade_lists_the_users_brokers(stub):
    response = await stub.CheckTrade(check("alice", size="50000"), timeout=5)
    assert response.allowed
    assert response.reason == ""
    assert response.denial_code == pb.DENIAL_CODE_UNSPECIFIED
    assert list(response.allowed_brokers) == sorted(BROKERS)

    bob = await stub.CheckTrade(check("bob", side=common_pb2.SIDE_SELL), timeout=5)
    assert list(bob.allowed_brokers) == ["coinbase", "kraken"]


@pytest.mark.parametrize(
    ("request_", "code", "reason_has"),
    [
        (check("carol"), pb.DENIAL_CODE_USER_DISABLED, "trading disabled for user carol"),
        (check("dave", pair="SOL-USD"), pb.DENIAL_CODE_PAIR_NOT_ALLOWED, "SOL-USD"),
        (
            check("dave", size="1000.5"),
            pb.DENIAL_CODE_SIZE_ABOVE_MAX,
            "1000.5 USD above max order size 1000 USD",
        ),
        (check("bob", size="5000.01"), pb.DENIAL_CODE_SIZE_ABOVE_MAX, "5000.01"),
    ],
)
async def test_denials_are_decisions(stub, request_, code, reason_has):
    response = await stub.CheckTrade(request_, timeout=5)
    assert not response.allowed
    assert response.denial_code == code
    assert reason_has in response.reason
    assert list(response.allowed_brokers) == []


async def test_no_allowed_broker_is_a_denial(server: RunningServer, stub):
    await server.app.store.upsert(dataclasses.replace(BOB, allowed_brokers=()))
    response = await stub.CheckTrade(check("bob"), timeout=5)
    assert not response.allowed
    assert response.denial_code == pb.DENIAL_CODE_NO_ALLOWED_BROKER


async def test_size_equal_to_max_is_allowed(stub):
    assert (await stub.CheckTrade(check("dave", size="1000.00"), timeout=5)).allowed


async def test_edit_from_another_process_is_seen_on_next_call(db_path: str, stub):
    other = UserStore(db_path)
    await other.open()
    try:
        await other.upsert(dataclasses.replace(BOB, enabled=False))
    finally:
        await other.close()
    response = await stub.CheckTrade(check("bob"), timeout=5)
    assert response.denial_code == pb.DENIAL_CODE_USER_DISABLED


async def test_unknown_user_is_not_found(stub):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CheckTrade(check("mallory"), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert reason_of(err.value) == "USER_NOT_FOUND"


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        (check(user_id=""), "BAD_USER_ID"),
        (check(user_id="bad user"), "BAD_USER_ID"),
        (check(pair=""), "BAD_PAIR"),
        (check(pair="btc/usd"), "BAD_PAIR"),
        (check(side=common_pb2.SIDE_UNSPECIFIED), "BAD_SIDE"),
        (check(size=""), "BAD_SIZE_USD"),
        (check(size="NaN"), "BAD_SIZE_USD"),
        (check(size="abc"), "BAD_SIZE_USD"),
        (check(size="-1"), "BAD_SIZE_USD"),
        (check(size="0"), "BAD_SIZE_USD"),
        (check(size="1e5"), "BAD_SIZE_USD"),
        (
            pb.CheckTradeRequest(
                user_id="alice", pair="BTC-USD", side=common_pb2.SIDE_BUY, size_usd="1", signal_id="bad id"
            ),
            "BAD_SIGNAL_ID",
        ),
    ],
)
async def test_malformed_check_is_invalid_argument(stub, request_, reason):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CheckTrade(request_, timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason_of(err.value) == reason


async def test_malformed_input_is_refused_before_the_user_is_looked_up(stub):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CheckTrade(check("mallory", size="0"), timeout=5)
    assert reason_of(err.value) == "BAD_SIZE_USD"


async def test_get_user_permissions(stub):
    response = await stub.GetUserPermissions(pb.GetUserPermissionsRequest(user_id="dave"), timeout=5)
    assert response.permissions == pb.UserPermissions(
        user_id="dave",
        enabled=True,
        allowed_brokers=sorted(BROKERS),
        allowed_pairs=["BTC-USD", "ETH-USD"],
        max_order_size_usd="1000",
        preferences=pb.RoutingPreferences(routing_policy=common_pb2.ROUTING_POLICY_COST, max_slippage_bps=50),
        limits=pb.RiskLimits(trades_per_second="50", trade_burst=50),
    )
    carol = await stub.GetUserPermissions(pb.GetUserPermissionsRequest(user_id="carol"), timeout=5)
    assert carol.permissions.enabled is False
    assert list(carol.permissions.allowed_pairs) == []
    assert carol.permissions.HasField("preferences")
    assert carol.permissions.preferences == pb.RoutingPreferences()
    bob = await stub.GetUserPermissions(pb.GetUserPermissionsRequest(user_id="bob"), timeout=5)
    assert bob.permissions.preferences == pb.RoutingPreferences(preferred_brokers=["kraken"])


async def test_get_user_permissions_errors(stub):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetUserPermissions(pb.GetUserPermissionsRequest(user_id="mallory"), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert reason_of(err.value) == "USER_NOT_FOUND"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetUserPermissions(pb.GetUserPermissionsRequest(user_id=""), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason_of(err.value) == "BAD_USER_ID"


@pytest.mark.parametrize("service", ["", "nija.permission.v1.PermissionService"])
async def test_health_is_serving(channel, service: str):
    health = health_pb2_grpc.HealthStub(channel)
    response = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_no_demo_users_when_seeding_is_off(tmp_path: Path):
    config = Config(database_path=str(tmp_path / "empty.db"), seed_demo_users=False)
    running = await RunningServer(build_app(config, Security(), authenticate), Listen(port=0)).start()
    try:
        async with channel_as(running.target, "router") as channel:
            stub = permission_pb2_grpc.PermissionServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.CheckTrade(check("alice"), timeout=5)
        assert reason_of(err.value) == "USER_NOT_FOUND"
    finally:
        await running.stop(0)


async def test_restart_keeps_edits(db_path: str):
    for expected in ("5000", "7.5"):
        running = await RunningServer(build_app(Config(database_path=db_path), Security(), authenticate), Listen(port=0)).start()
        try:
            async with channel_as(running.target, "router") as channel:
                stub = permission_pb2_grpc.PermissionServiceStub(channel)
                request = pb.GetUserPermissionsRequest(user_id="bob")
                response = await stub.GetUserPermissions(request, timeout=5)
            assert response.permissions.max_order_size_usd == expected
            await running.app.store.upsert(dataclasses.replace(BOB, max_order_size_usd=Decimal("7.5")))
        finally:
            await running.stop(0)


async def test_calls_before_the_store_is_open_are_unavailable(db_path: str):
    with pytest.raises(ServiceError) as err:
        await _user(UserStore(db_path), "alice")
    assert err.value.code == grpc.StatusCode.UNAVAILABLE


# Routing preferences on the wire.


@pytest.mark.parametrize(
    ("user_id", "expected"),
    [
        ("alice", pb.RoutingPreferences()),
        ("bob", pb.RoutingPreferences(preferred_brokers=["kraken"])),
        (
            "dave",
            pb.RoutingPreferences(routing_policy=common_pb2.ROUTING_POLICY_COST, max_slippage_bps=50),
        ),
    ],
)
async def test_allowed_check_returns_the_users_preferences(stub, user_id: str, expected):
    response = await stub.CheckTrade(check(user_id), timeout=5)
    assert response.allowed
    assert response.HasField("preferences")
    assert response.preferences == expected


async def test_denied_check_carries_no_preferences(stub):
    response = await stub.CheckTrade(check("dave", pair="SOL-USD"), timeout=5)
    assert not response.allowed
    assert not response.HasField("preferences")


async def test_every_preference_field_reaches_the_wire(server: RunningServer, stub):
    preferences = RoutingPreferences(
        preferred_brokers=("kraken", "binance"),
        blocked_brokers=("coinbase",),
        routing_policy=RoutingPolicy.SCORE,
        max_slippage_bps=10_000,
    )
    await server.app.store.upsert(dataclasses.replace(ALICE, preferences=preferences))
    expected = pb.RoutingPreferences(
        preferred_brokers=["binance", "kraken"],
        blocked_brokers=["coinbase"],
        routing_policy=common_pb2.ROUTING_POLICY_SCORE,
        max_slippage_bps=10_000,
    )
    response = await stub.CheckTrade(check("alice"), timeout=5)
    assert response.preferences == expected
    # The blocked broker is gone from the brokers the trade may use.
    assert list(response.allowed_brokers) == ["alpaca", "binance", "kraken"]
    permissions = await stub.GetUserPermissions(pb.GetUserPermissionsRequest(user_id="alice"), timeout=5)
    assert permissions.permissions.preferences == expected
    # GetUserPermissions reports what is allowed, not what is left after blocking.
    assert list(permissions.permissions.allowed_brokers) == sorted(BROKERS)


async def test_every_allowed_broker_blocked_is_a_denial(server: RunningServer, stub):
    await server.app.store.upsert(
        dataclasses.replace(BOB, preferences=RoutingPreferences(blocked_brokers=("coinbase", "kraken")))
    )
    response = await stub.CheckTrade(check("bob"), timeout=5)
    assert not response.allowed
    assert response.denial_code == pb.DENIAL_CODE_NO_ALLOWED_BROKER
    assert "blocked: coinbase, kraken" in response.reason
    assert list(response.allowed_brokers) == []
    assert not response.HasField("preferences")


def test_every_policy_has_a_wire_value():
    assert POLICY_TO_PB == {
        None: common_pb2.ROUTING_POLICY_UNSPECIFIED,
        RoutingPolicy.SCORE: common_pb2.ROUTING_POLICY_SCORE,
        RoutingPolicy.COST: common_pb2.ROUTING_POLICY_COST,
    }
    assert set(POLICY_TO_PB) == {None, *RoutingPolicy}
    assert preferences_to_pb(RoutingPreferences()) == pb.RoutingPreferences()


async def test_a_database_from_before_the_preferences_is_served(db_path: str):
    """The service starts on a file the previous version wrote: migrated, not re-seeded."""
    create_v1_database(db_path)
    running = await RunningServer(build_app(Config(database_path=db_path), Security(), authenticate), Listen(port=0)).start()
    try:
        async with channel_as(running.target, "router") as channel:
            stub = permission_pb2_grpc.PermissionServiceStub(channel)
            dave = await stub.CheckTrade(check("dave", size="1000.5"), timeout=5)
            assert dave.allowed
            assert list(dave.allowed_brokers) == ["coinbase"]
            assert dave.HasField("preferences") and dave.preferences == pb.RoutingPreferences()
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.CheckTrade(check("bob"), timeout=5)  # the demo users were not seeded
            assert reason_of(err.value) == "USER_NOT_FOUND"
    finally:
        await running.stop(0)
