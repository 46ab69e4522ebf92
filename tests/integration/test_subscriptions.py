"""Strategy subscriptions with their allocations, and the brokers a user holds keys for, through
the real permission gRPC server on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import grpc
import pytest
from nija.common.v1 import common_pb2
from nija.permission.v1 import permission_pb2 as pb
from nija.permission.v1 import permission_pb2_grpc

from services.client.errors import error_info
from services.domain.allocation import Allocation, Rule
from services.permission.app import Config, build_app
from services.permission.client import PermissionClient, Subscription
from services.runtime.errors import ServiceError, reason_of
from services.runtime.security import Security
from services.runtime.server import Listen, RunningServer
from tests.principals import authenticate, channel_as

D = Decimal


@pytest.fixture
async def server(database_url: str, tmp_path: Path) -> AsyncIterator[RunningServer]:
    if database_url.startswith("postgresql://"):
        config = Config(database_url=database_url, master_key_file=str(tmp_path / "master.keys"))
    else:
        config = Config(database_path=database_url)
    running = await RunningServer(build_app(config, Security(), authenticate), Listen(port=0)).start()
    yield running
    await running.stop(0)


@pytest.fixture
async def admin(server: RunningServer) -> AsyncIterator[permission_pb2_grpc.AdminServiceStub]:
    async with channel_as(server.target, "admin") as channel:
        yield permission_pb2_grpc.AdminServiceStub(channel)


@pytest.fixture
async def permission(server: RunningServer) -> AsyncIterator[permission_pb2_grpc.PermissionServiceStub]:
    """As the router sees it."""
    async with channel_as(server.target, "router") as channel:
        yield permission_pb2_grpc.PermissionServiceStub(channel)


def subscribe(strategy: str, user: str, allocation: pb.Allocation | None = None) -> pb.SetSubscriptionRequest:
    request = pb.SetSubscriptionRequest(strategy_id=strategy, user_id=user, subscribed=True)
    if allocation is not None:
        request.allocation.CopyFrom(allocation)
    return request


async def listed(stub, strategy: str = "", user: str = ""):  # type: ignore[no-untyped-def]
    """(strategy, user, allocation) as ListSubscriptions answers, in its order."""
    response = await stub.ListSubscriptions(pb.ListSubscriptionsRequest(strategy_id=strategy, user_id=user), timeout=5)
    return [(s.strategy_id, s.user_id, s.allocation) for s in response.subscriptions]


FIXED = pb.Allocation(fixed_usd="250.50", max_order_usd="200")
PERCENT = pb.Allocation(percent_of_capital=pb.PercentOfCapital(percent="2.5", capital_usd="10000"))
HALF = pb.Allocation(multiplier="0.5", pairs=["ETH-USD", "BTC-USD"])


async def test_each_rule_is_set_and_listed_by_strategy_and_by_user(admin, permission):
    await admin.SetSubscription(subscribe("momentum", "alice", FIXED), timeout=5)
    await admin.SetSubscription(subscribe("momentum", "bob", PERCENT), timeout=5)
    await admin.SetSubscription(subscribe("carry", "bob", HALF), timeout=5)
    await admin.SetSubscription(subscribe("carry", "dave"), timeout=5)  # absent: multiplier 1

    # Decimals come back normalized, pairs sorted.
    fixed = pb.Allocation(fixed_usd="250.5", max_order_usd="200")
    half = pb.Allocation(multiplier="0.5", pairs=["BTC-USD", "ETH-USD"])
    assert await listed(permission, "momentum") == [("momentum", "alice", fixed), ("momentum", "bob", PERCENT)]
    assert await listed(permission, user="bob") == [("carry", "bob", half), ("momentum", "bob", PERCENT)]
    assert await listed(permission, "carry", "dave") == [("carry", "dave", pb.Allocation(multiplier="1"))]
    assert [(s, u) for s, u, _ in await listed(permission)] == [
        ("carry", "bob"), ("carry", "dave"), ("momentum", "alice"), ("momentum", "bob"),
    ]
    assert await listed(permission, "nobody") == []


async def test_subscribing_again_replaces_and_unsubscribing_removes(admin, permission):
    await admin.SetSubscription(subscribe("momentum", "alice", FIXED), timeout=5)
    await admin.SetSubscription(subscribe("momentum", "alice", PERCENT), timeout=5)
    assert await listed(permission, "momentum") == [("momentum", "alice", PERCENT)]
    await admin.SetSubscription(subscribe("momentum", "alice"), timeout=5)
    assert await listed(permission, "momentum") == [("momentum", "alice", pb.Allocation(multiplier="1"))]
    await admin.SetSubscription(
        pb.SetSubscriptionRequest(strategy_id="momentum", user_id="alice", subscribed=False), timeout=5
    )
    assert await listed(permission, "momentum") == []


@pytest.mark.parametrize(
    ("allocation", "reason", "field"),
    [
        (pb.Allocation(fixed_usd="0"), "BAD_FIXED_USD", "allocation.fixed_usd"),
        (pb.Allocation(fixed_usd="1e3"), "BAD_FIXED_USD", "allocation.fixed_usd"),
        (pb.Allocation(multiplier="-1"), "BAD_MULTIPLIER", "allocation.multiplier"),
        (pb.Allocation(multiplier=""), "BAD_MULTIPLIER", "allocation.multiplier"),
        (pb.Allocation(percent_of_capital=pb.PercentOfCapital(percent="150", capital_usd="100")),
         "BAD_PERCENT", "allocation.percent_of_capital.percent"),
        (pb.Allocation(percent_of_capital=pb.PercentOfCapital(percent="5", capital_usd="")),
         "BAD_CAPITAL_USD", "allocation.percent_of_capital.capital_usd"),
        (pb.Allocation(multiplier="1", max_order_usd="NaN"), "BAD_MAX_ORDER_USD", "allocation.max_order_usd"),
        (pb.Allocation(multiplier="1", pairs=["BTC-USD", "btc_usd"]), "BAD_PAIRS", "allocation.pairs"),
        (pb.Allocation(multiplier="1", pairs=[f"C{i}-USD" for i in range(101)]), "BAD_PAIRS", "allocation.pairs"),
    ],
)
async def test_a_bad_allocation_names_its_field_and_writes_nothing(admin, permission, allocation, reason, field):
    await admin.SetSubscription(subscribe("momentum", "alice", FIXED), timeout=5)
    for user in ("alice", "bob"):  # replacing one, or creating one
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await admin.SetSubscription(subscribe("momentum", user, allocation), timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_info(err.value) == (reason, {"field": field})
    unchanged = pb.Allocation(fixed_usd="250.5", max_order_usd="200")
    assert await listed(permission, "momentum") == [("momentum", "alice", unchanged)]


async def test_an_unknown_user_is_not_found_and_nothing_is_written(admin, permission):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await admin.SetSubscription(subscribe("momentum", "mallory", FIXED), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert reason_of(err.value) == "USER_NOT_FOUND"
    assert await listed(permission) == []


async def test_list_filters_are_checked(permission):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await permission.ListSubscriptions(pb.ListSubscriptionsRequest(strategy_id="bad id"), timeout=5)
    assert (err.value.code(), reason_of(err.value)) == (grpc.StatusCode.INVALID_ARGUMENT, "BAD_STRATEGY_ID")


async def test_only_the_router_and_admins_list_subscriptions(server: RunningServer, admin):
    await admin.SetSubscription(subscribe("momentum", "alice"), timeout=5)
    for who, allowed in [("router", True), ("admin", True), ("aggregator", False), ("executor-binance", False),
                         ("alice", False)]:
        async with channel_as(server.target, who) as channel:
            stub = permission_pb2_grpc.PermissionServiceStub(channel)
            try:
                await stub.ListSubscriptions(pb.ListSubscriptionsRequest(strategy_id="momentum"), timeout=5)
                code = grpc.StatusCode.OK
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
        assert (code == grpc.StatusCode.OK) is allowed, f"{who}: {code}"
        assert code in (grpc.StatusCode.OK, grpc.StatusCode.PERMISSION_DENIED), who


# ---- the router's client -------------------------------------------------------------------------


async def test_the_client_lists_a_strategys_subscribers_as_domain_values(server: RunningServer, admin):
    await admin.SetSubscription(subscribe("momentum", "bob", PERCENT), timeout=5)
    await admin.SetSubscription(subscribe("momentum", "alice", HALF), timeout=5)
    await admin.SetSubscription(subscribe("carry", "dave", FIXED), timeout=5)
    client = PermissionClient(server.target, Security(token="tok-router"))
    try:
        assert await client.subscriptions("momentum", time_remaining=5) == [
            Subscription("alice", Allocation(Rule.MULTIPLIER, D("0.5"), pairs=frozenset({"BTC-USD", "ETH-USD"}))),
            Subscription("bob", Allocation(Rule.PERCENT_OF_CAPITAL, D("2.5"), capital_usd=D(10000))),
        ]
        assert await client.subscriptions("nobody") == []
        with pytest.raises(ServiceError) as err:
            await client.subscriptions("bad id")
        assert (err.value.code, err.value.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "BAD_STRATEGY_ID")
    finally:
        await client.close()
    # Errors are relayed with their code and reason, like the client's other calls.
    denied = PermissionClient(server.target, Security(token="tok-aggregator"))
    try:
        with pytest.raises(ServiceError) as err:
            await denied.subscriptions("momentum")
        assert (err.value.code, err.value.reason) == (grpc.StatusCode.PERMISSION_DENIED, "NOT_ALLOWED")
    finally:
        await denied.close()


# ---- api_key_brokers -----------------------------------------------------------------------------


def trade(user: str, signal_id: str, size: str = "100", pair: str = "BTC-USD") -> dict[str, object]:
    return {"user_id": user, "pair": pair, "side": common_pb2.SIDE_BUY, "size_usd": size, "signal_id": signal_id}


async def test_api_key_brokers_appear_once_keys_are_stored(admin, permission):
    check = await permission.CheckTrade(pb.CheckTradeRequest(**trade("alice", "k-1")), timeout=5)
    reserve = await permission.ReserveTrade(pb.ReserveTradeRequest(**trade("alice", "k-1")), timeout=5)
    assert check.allowed and reserve.allowed
    assert list(check.api_key_brokers) == [] and list(reserve.api_key_brokers) == []

    for broker in ("kraken", "binance"):
        await admin.SetApiKeys(pb.SetApiKeysRequest(
            user_id="alice", broker=broker, credentials=pb.ApiCredentials(api_key=f"AK-{broker}", api_secret="s")),
            timeout=5)
    check = await permission.CheckTrade(pb.CheckTradeRequest(**trade("alice", "k-2")), timeout=5)
    reserve = await permission.ReserveTrade(pb.ReserveTradeRequest(**trade("alice", "k-2")), timeout=5)
    replay = await permission.ReserveTrade(pb.ReserveTradeRequest(**trade("alice", "k-2")), timeout=5)
    assert list(check.api_key_brokers) == ["binance", "kraken"]
    assert list(reserve.api_key_brokers) == ["binance", "kraken"] and not reserve.replayed
    assert list(replay.api_key_brokers) == ["binance", "kraken"] and replay.replayed
    # Another user's keys are not theirs.
    bob = await permission.CheckTrade(pb.CheckTradeRequest(**trade("bob", "k-3")), timeout=5)
    assert bob.allowed and list(bob.api_key_brokers) == []

    await admin.DeleteApiKeys(pb.DeleteApiKeysRequest(user_id="alice", broker="kraken"), timeout=5)
    check = await permission.CheckTrade(pb.CheckTradeRequest(**trade("alice", "k-4")), timeout=5)
    assert list(check.api_key_brokers) == ["binance"]


async def test_a_denial_carries_no_api_key_brokers(admin, permission):
    await admin.SetApiKeys(pb.SetApiKeysRequest(
        user_id="dave", broker="coinbase", credentials=pb.ApiCredentials(api_key="AK", api_secret="s")), timeout=5)
    denied = pb.CheckTradeRequest(**trade("dave", "d-1", pair="SOL-USD"))  # dave trades BTC and ETH only
    check = await permission.CheckTrade(denied, timeout=5)
    reserve = await permission.ReserveTrade(pb.ReserveTradeRequest(**trade("dave", "d-1", pair="SOL-USD")), timeout=5)
    assert not check.allowed and not reserve.allowed
    assert list(check.api_key_brokers) == [] and list(reserve.api_key_brokers) == []
    allowed = await permission.CheckTrade(pb.CheckTradeRequest(**trade("dave", "d-2")), timeout=5)
    assert list(allowed.api_key_brokers) == ["coinbase"]


async def test_the_controls_stream_announces_every_change_of_the_api_keys(server, admin):
    """Executors keep a user's credentials until the API keys' version on WatchControls changes."""
    channel = channel_as(server.target, "executor-kraken")
    watch = permission_pb2_grpc.PermissionServiceStub(channel).WatchControls(pb.WatchControlsRequest(), timeout=30)
    first = await watch.read()
    assert first.api_keys_version

    await admin.SetApiKeys(pb.SetApiKeysRequest(
        user_id="alice", broker="kraken", credentials=pb.ApiCredentials(api_key="AK-1", api_secret="s")), timeout=5)
    set_once = await asyncio.wait_for(watch.read(), 5)
    assert set_once.api_keys_version != first.api_keys_version

    await admin.SetApiKeys(pb.SetApiKeysRequest(  # replaced: same count, new stamp
        user_id="alice", broker="kraken", credentials=pb.ApiCredentials(api_key="AK-2", api_secret="s")), timeout=5)
    replaced = await asyncio.wait_for(watch.read(), 5)
    assert replaced.api_keys_version not in (first.api_keys_version, set_once.api_keys_version)

    await admin.DeleteApiKeys(pb.DeleteApiKeysRequest(user_id="alice", broker="kraken"), timeout=5)
    deleted = await asyncio.wait_for(watch.read(), 5)
    assert deleted.api_keys_version not in (set_once.api_keys_version, replaced.api_keys_version)
    assert not deleted.global_kill and list(deleted.users) == []  # the kill switches ride along, unchanged
    watch.cancel()
    await channel.close()
