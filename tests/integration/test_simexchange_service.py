"""SimulatedExchangeService over real gRPC: health, wire shapes, canonical codes and ErrorInfo reasons."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nija.common.v1 import common_pb2
from nija.simexchange.v1 import simexchange_pb2 as pb
from nija.simexchange.v1 import simexchange_pb2_grpc

from services.runtime.config import ConfigError, load_config
from services.runtime.errors import reason_of
from services.runtime.server import Listen, RunningServer
from services.simexchange.app import SERVICE_NAME, App, Config, build_app
from services.simexchange.network import NO_FAULT

BUY, SELL = common_pb2.SIDE_BUY, common_pb2.SIDE_SELL
MARKET, LIMIT = pb.ORDER_TYPE_MARKET, pb.ORDER_TYPE_LIMIT


@pytest.fixture
async def server() -> AsyncIterator[RunningServer]:
    running = await RunningServer(build_app(Config(seed=5, volatility_bps=0.0)), Listen(port=0)).start()
    yield running
    await running.stop(0)


@pytest.fixture
async def channel(server: RunningServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(server.target) as channel:
        yield channel


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> simexchange_pb2_grpc.SimulatedExchangeServiceStub:
    return simexchange_pb2_grpc.SimulatedExchangeServiceStub(channel)


def place(**fields: object) -> pb.PlaceOrderRequest:
    base: dict[str, object] = dict(
        broker="binance",
        account_id="acct-1",
        client_order_id="c-1",
        pair="BTC-USD",
        side=BUY,
        order_type=MARKET,
        quantity="0.01",
    )
    base.update(fields)
    return pb.PlaceOrderRequest(**base)  # type: ignore[arg-type]


async def refused(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call  # type: ignore[misc]
    return raised.value.code(), reason_of(raised.value)


async def test_health_is_serving(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", SERVICE_NAME):
        response = await health.Check(health_pb2.HealthCheckRequest(service=name))
        assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_markets_and_fees_are_decimal_strings(
    stub: simexchange_pb2_grpc.SimulatedExchangeServiceStub,
) -> None:
    response = await stub.ListMarkets(pb.ListMarketsRequest(broker="kraken"))
    assert (response.fees.maker, response.fees.taker) == ("0.0016", "0.0026")
    btc = {m.pair: m for m in response.markets}["BTC-USD"]
    assert (btc.base, btc.quote, btc.tick_size, btc.lot_size, btc.min_quantity, btc.min_notional) == (
        "BTC",
        "USD",
        "0.1",
        "0.00000001",
        "0.0001",
        "0.5",
    )
    assert "XMR-USD" in {m.pair for m in response.markets}
    assert btc.withdrawal_fee == "0.00015"
    assert all(Decimal(m.withdrawal_fee) > 0 and "E" not in m.withdrawal_fee for m in response.markets)


async def test_order_book_best_first(stub: simexchange_pb2_grpc.SimulatedExchangeServiceStub) -> None:
    book = await stub.GetOrderBook(pb.GetOrderBookRequest(broker="coinbase", pair="ETH-USD", depth=5))
    assert len(book.bids) == len(book.asks) == 5
    assert Decimal(book.bids[0].price) < Decimal(book.asks[0].price)
    assert Decimal(book.asks[0].price) < Decimal(book.asks[4].price)
    assert book.time.seconds > 0


async def test_market_order_round_trip(stub: simexchange_pb2_grpc.SimulatedExchangeServiceStub) -> None:
    placed = (await stub.PlaceOrder(place(quantity="0.5"))).order
    assert placed.state == pb.ORDER_STATE_FILLED and placed.venue_order_id
    assert placed.filled_quantity == "0.5" and placed.limit_price == ""
    for fill in placed.fills:
        assert (
            fill.venue_trade_id
            and fill.fee_currency == "USD"
            and fill.liquidity == common_pb2.LIQUIDITY_TAKER
        )
        assert Decimal(fill.fee) == Decimal(fill.price) * Decimal(fill.quantity) * Decimal("0.001")
        assert "E" not in fill.fee and fill.time.seconds > 0

    by_venue_id = await stub.GetOrder(
        pb.GetOrderRequest(broker="binance", account_id="acct-1", venue_order_id=placed.venue_order_id)
    )
    assert by_venue_id.order == placed


async def test_limit_order_rests_and_cancels(stub: simexchange_pb2_grpc.SimulatedExchangeServiceStub) -> None:
    placed = (await stub.PlaceOrder(place(order_type=LIMIT, quantity="1", limit_price="50000"))).order
    assert placed.state == pb.ORDER_STATE_OPEN and placed.limit_price == "50000"
    balances = await stub.GetBalances(pb.GetBalancesRequest(broker="binance", account_id="acct-1"))
    usd = {b.asset: b for b in balances.balances}["USD"]
    assert Decimal(usd.locked) == Decimal("50050")  # 1 x 50000 x (1 + taker 0.001)

    cancelled = await stub.CancelOrder(
        pb.CancelOrderRequest(broker="binance", account_id="acct-1", client_order_id="c-1")
    )
    assert cancelled.order.state == pb.ORDER_STATE_CANCELLED


@pytest.mark.parametrize(
    ("request_", "code", "reason"),
    [
        (place(broker="ftx"), grpc.StatusCode.NOT_FOUND, "UNKNOWN_BROKER"),
        (place(broker=""), grpc.StatusCode.INVALID_ARGUMENT, "BAD_BROKER"),
        (place(pair="XMR-USD"), grpc.StatusCode.NOT_FOUND, "UNKNOWN_PAIR"),
        (place(pair="btcusd"), grpc.StatusCode.INVALID_ARGUMENT, "BAD_PAIR"),
        (place(account_id=""), grpc.StatusCode.INVALID_ARGUMENT, "BAD_ACCOUNT_ID"),
        (place(client_order_id=""), grpc.StatusCode.INVALID_ARGUMENT, "BAD_CLIENT_ORDER_ID"),
        (place(client_order_id="has space"), grpc.StatusCode.INVALID_ARGUMENT, "BAD_CLIENT_ORDER_ID"),
        (place(side=common_pb2.SIDE_UNSPECIFIED), grpc.StatusCode.INVALID_ARGUMENT, "BAD_SIDE"),
        (place(order_type=pb.ORDER_TYPE_UNSPECIFIED), grpc.StatusCode.INVALID_ARGUMENT, "BAD_ORDER_TYPE"),
        (place(quantity=""), grpc.StatusCode.INVALID_ARGUMENT, "BAD_QUANTITY"),
        (place(quantity="abc"), grpc.StatusCode.INVALID_ARGUMENT, "BAD_QUANTITY"),
        (place(quantity="1e-2"), grpc.StatusCode.INVALID_ARGUMENT, "BAD_QUANTITY"),
        (place(quantity="NaN"), grpc.StatusCode.INVALID_ARGUMENT, "BAD_QUANTITY"),
        (place(quantity="-1"), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ORDER"),
        (place(quantity="0.000001"), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ORDER"),
        (place(quantity="0.0001"), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ORDER"),  # under $10
        (place(order_type=LIMIT), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ORDER"),  # no price
        (place(order_type=LIMIT, limit_price="inf"), grpc.StatusCode.INVALID_ARGUMENT, "BAD_LIMIT_PRICE"),
        (place(order_type=LIMIT, limit_price="60000.005"), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ORDER"),
        (place(limit_price="60000"), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ORDER"),  # market with price
        (place(side=SELL, quantity="5"), grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS"),
        (
            place(order_type=LIMIT, quantity="20", limit_price="60000"),
            grpc.StatusCode.FAILED_PRECONDITION,
            "INSUFFICIENT_FUNDS",
        ),
    ],
)
async def test_place_order_refusals(
    stub: simexchange_pb2_grpc.SimulatedExchangeServiceStub,
    request_: pb.PlaceOrderRequest,
    code: grpc.StatusCode,
    reason: str,
) -> None:
    assert await refused(stub.PlaceOrder(request_)) == (code, reason)
    # Refused whole: the client order id is still free.
    placed = await stub.PlaceOrder(place())
    assert placed.order.state == pb.ORDER_STATE_FILLED


async def test_refusals_leave_balances_untouched(
    stub: simexchange_pb2_grpc.SimulatedExchangeServiceStub,
) -> None:
    request = pb.GetBalancesRequest(broker="binance", account_id="acct-1")
    before = await stub.GetBalances(request)
    await refused(stub.PlaceOrder(place(side=SELL, quantity="5")))
    await refused(stub.PlaceOrder(place(order_type=LIMIT, quantity="20", limit_price="60000")))
    assert await stub.GetBalances(request) == before


async def test_client_order_id_reuse_is_already_exists(
    stub: simexchange_pb2_grpc.SimulatedExchangeServiceStub,
) -> None:
    await stub.PlaceOrder(place())
    assert await refused(stub.PlaceOrder(place(pair="ETH-USD", quantity="1"))) == (
        grpc.StatusCode.ALREADY_EXISTS,
        "DUPLICATE_CLIENT_ORDER_ID",
    )


async def test_unknown_orders(stub: simexchange_pb2_grpc.SimulatedExchangeServiceStub) -> None:
    missing = (grpc.StatusCode.NOT_FOUND, "ORDER_NOT_FOUND")
    assert (
        await refused(
            stub.GetOrder(pb.GetOrderRequest(broker="binance", account_id="acct-1", client_order_id="nope"))
        )
        == missing
    )
    assert (
        await refused(
            stub.CancelOrder(
                pb.CancelOrderRequest(broker="binance", account_id="acct-1", venue_order_id="nope")
            )
        )
        == missing
    )
    assert await refused(stub.GetOrder(pb.GetOrderRequest(broker="binance", account_id="acct-1"))) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "BAD_CLIENT_ORDER_ID",
    )
    assert await refused(
        stub.GetOrder(pb.GetOrderRequest(broker="nyse", account_id="acct-1", client_order_id="x"))
    ) == (grpc.StatusCode.NOT_FOUND, "UNKNOWN_BROKER")


async def test_book_and_markets_refusals(stub: simexchange_pb2_grpc.SimulatedExchangeServiceStub) -> None:
    assert await refused(stub.GetOrderBook(pb.GetOrderBookRequest(broker="alpaca", pair="XRP-USD"))) == (
        grpc.StatusCode.NOT_FOUND,
        "UNKNOWN_PAIR",
    )
    assert await refused(stub.ListMarkets(pb.ListMarketsRequest(broker="mtgox"))) == (
        grpc.StatusCode.NOT_FOUND,
        "UNKNOWN_BROKER",
    )
    assert await refused(stub.GetBalances(pb.GetBalancesRequest(broker="binance"))) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "BAD_ACCOUNT_ID",
    )


def test_config_is_typed_and_rejects_unknown_keys() -> None:
    config = load_config(Config, {"tick_interval_s": "0.5", "seed": "9", "latency_ms": "20"})
    assert (config.tick_interval_s, config.seed, config.latency_ms) == (0.5, 9, 20.0)
    assert load_config(Config, {"seed": ""}).seed is None
    with pytest.raises(ConfigError):
        load_config(Config, {"tick_interval": "1"})
    with pytest.raises(ConfigError):
        Config(tick_interval_s=0)
    with pytest.raises(ConfigError):
        Config(latency_ms=-1)
    with pytest.raises(ConfigError):
        Config(volatility_bps=-1)


def test_config_overrides_are_read_and_checked() -> None:
    config = load_config(
        Config,
        {
            "fee_overrides": "binance=0.001/0.001, kraken=0.0009/0.0011",
            "depth_overrides": "alpaca=0.05,kraken=2",
        },
    )
    assert {b: (f.maker, f.taker) for b, f in config.fee_schedules().items()} == {
        "binance": (Decimal("0.001"), Decimal("0.001")),
        "kraken": (Decimal("0.0009"), Decimal("0.0011")),
    }
    assert config.depth_multipliers() == {"alpaca": Decimal("0.05"), "kraken": Decimal(2)}
    assert Config().fee_schedules() == {} and Config().depth_multipliers() == {}


@pytest.mark.parametrize(
    "values",
    [
        {"fee_overrides": "binance=0.001"},  # no taker
        {"fee_overrides": "binance"},
        {"fee_overrides": "ftx=0.001/0.001"},
        {"fee_overrides": "binance=0.001/abc"},
        {"fee_overrides": "binance=1e-3/0.001"},
        {"fee_overrides": "binance=0.002/0.001"},  # maker above taker
        {"fee_overrides": "binance=-0.001/0.001"},
        {"fee_overrides": "binance=0.5/1.5"},
        {"fee_overrides": "binance=0.001/0.001,binance=0.002/0.002"},
        {"depth_overrides": "alpaca=0"},
        {"depth_overrides": "alpaca=-1"},
        {"depth_overrides": "alpaca="},
        {"depth_overrides": "=2"},
        {"depth_overrides": "alpaca=thin"},
        {"depth_overrides": "nyse=2"},
    ],
)
def test_malformed_overrides_fail_at_construction(values: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        load_config(Config, values)


async def test_overrides_reach_the_wire() -> None:
    config = Config(
        seed=5, volatility_bps=0.0, fee_overrides="coinbase=0.001/0.0012", depth_overrides="alpaca=0.05"
    )
    running = await RunningServer(build_app(config), Listen(port=0)).start()
    try:
        async with grpc.aio.insecure_channel(running.target) as channel:
            stub = simexchange_pb2_grpc.SimulatedExchangeServiceStub(channel)
            fees = (await stub.ListMarkets(pb.ListMarketsRequest(broker="coinbase"))).fees
            assert (fees.maker, fees.taker) == ("0.001", "0.0012")
            book = await stub.GetOrderBook(pb.GetOrderBookRequest(broker="alpaca", pair="BTC-USD"))
            side_usd = sum(Decimal(lv.price) * Decimal(lv.quantity) for lv in book.asks)
            assert side_usd < 400_000 * Decimal("0.2") * Decimal("0.05") * Decimal("1.3")
    finally:
        await running.stop(0)


# --- faults -----------------------------------------------------------------------------------

UNAVAILABLE = (grpc.StatusCode.UNAVAILABLE, "EXCHANGE_UNAVAILABLE")


def fault(broker: str, mode: int = pb.FAULT_MODE_UNAVAILABLE, latency_ms: int = 0) -> pb.SetFaultRequest:
    return pb.SetFaultRequest(broker=broker, mode=mode, latency_ms=latency_ms)  # type: ignore[arg-type]


def flaky(broker: str, **fields: object) -> pb.SetFaultRequest:
    """A SetFault for `broker` with mode NONE unless given: only the named fields set."""
    fields = {"mode": pb.FAULT_MODE_NONE, **fields}
    return pb.SetFaultRequest(broker=broker, **fields)  # type: ignore[arg-type]


def every_call(
    stub: simexchange_pb2_grpc.SimulatedExchangeServiceStub, broker: str
) -> dict[str, Callable[[], Awaitable[object]]]:
    """One call of every exchange RPC for `broker`, each valid when the exchange is up."""
    return {
        "ListMarkets": lambda: stub.ListMarkets(pb.ListMarketsRequest(broker=broker)),
        "GetOrderBook": lambda: stub.GetOrderBook(pb.GetOrderBookRequest(broker=broker, pair="BTC-USD")),
        "PlaceOrder": lambda: stub.PlaceOrder(place(broker=broker, client_order_id="f-1")),
        "GetOrder": lambda: stub.GetOrder(
            pb.GetOrderRequest(broker=broker, account_id="acct-1", client_order_id="f-1")
        ),
        "CancelOrder": lambda: stub.CancelOrder(
            pb.CancelOrderRequest(broker=broker, account_id="acct-1", client_order_id="f-1")
        ),
        "GetBalances": lambda: stub.GetBalances(pb.GetBalancesRequest(broker=broker, account_id="acct-1")),
    }


async def test_unavailable_fault_refuses_every_call_for_that_broker_only(
    stub: simexchange_pb2_grpc.SimulatedExchangeServiceStub,
) -> None:
    balances = pb.GetBalancesRequest(broker="kraken", account_id="acct-1")
    before = await stub.GetBalances(balances)
    await stub.SetFault(fault("kraken"))

    for name, call in every_call(stub, "kraken").items():
        assert await refused(call()) == UNAVAILABLE, name
    # The other brokers are untouched.
    assert (await stub.PlaceOrder(place(broker="binance", client_order_id="f-1"))).order.state == (
        pb.ORDER_STATE_FILLED
    )

    await stub.SetFault(fault("kraken", pb.FAULT_MODE_NONE))

    # The refused PlaceOrder changed nothing: no order, balances as they were, the id still free.
    assert await refused(
        stub.GetOrder(pb.GetOrderRequest(broker="kraken", account_id="acct-1", client_order_id="f-1"))
    ) == (grpc.StatusCode.NOT_FOUND, "ORDER_NOT_FOUND")
    assert await stub.GetBalances(balances) == before
    for name, call in every_call(stub, "kraken").items():
        await call()  # each answers normally again


async def test_fault_latency_is_added_on_top_of_the_configured_latency() -> None:
    running = await RunningServer(build_app(Config(seed=5, latency_ms=40)), Listen(port=0)).start()
    loop = asyncio.get_running_loop()

    async def timed(call: Awaitable[object]) -> float:
        started = loop.time()
        await call
        return loop.time() - started

    try:
        async with grpc.aio.insecure_channel(running.target) as channel:
            stub = simexchange_pb2_grpc.SimulatedExchangeServiceStub(channel)
            await stub.SetFault(fault("alpaca", pb.FAULT_MODE_NONE, latency_ms=200))
            # SetFault itself is never slowed.
            assert await timed(stub.SetFault(fault("alpaca", pb.FAULT_MODE_NONE, latency_ms=200))) < 0.2

            for name, call in every_call(stub, "alpaca").items():
                assert await timed(call()) >= 0.24, name
            assert 0.04 <= await timed(stub.ListMarkets(pb.ListMarketsRequest(broker="binance"))) < 0.2

            # Slow and down: the outage is answered after the delay.
            await stub.SetFault(fault("alpaca", latency_ms=100))
            started = loop.time()
            assert await refused(stub.ListMarkets(pb.ListMarketsRequest(broker="alpaca"))) == UNAVAILABLE
            assert loop.time() - started >= 0.14

            await stub.SetFault(fault("alpaca", pb.FAULT_MODE_NONE))
            assert await timed(stub.ListMarkets(pb.ListMarketsRequest(broker="alpaca"))) < 0.2
    finally:
        await running.stop(0)


async def test_a_fault_lifted_during_the_trip_no_longer_applies(
    stub: simexchange_pb2_grpc.SimulatedExchangeServiceStub,
) -> None:
    await stub.SetFault(fault("coinbase", latency_ms=200))
    slow = asyncio.ensure_future(stub.ListMarkets(pb.ListMarketsRequest(broker="coinbase")))
    await asyncio.sleep(0.05)
    await stub.SetFault(fault("coinbase", pb.FAULT_MODE_NONE))
    assert (await slow).markets


@pytest.mark.parametrize(
    ("request_", "code", "reason"),
    [
        (fault("ftx"), grpc.StatusCode.NOT_FOUND, "UNKNOWN_BROKER"),
        (fault(""), grpc.StatusCode.INVALID_ARGUMENT, "BAD_BROKER"),
        (fault("binance", pb.FAULT_MODE_UNSPECIFIED), grpc.StatusCode.INVALID_ARGUMENT, "BAD_MODE"),
        (fault("binance", 9), grpc.StatusCode.INVALID_ARGUMENT, "BAD_MODE"),
        (fault("binance", latency_ms=60_001), grpc.StatusCode.INVALID_ARGUMENT, "BAD_LATENCY_MS"),
        *(
            (flaky("binance", **{field: value}), grpc.StatusCode.INVALID_ARGUMENT, f"BAD_{field.upper()}")
            for field in ("error_rate", "lose_response_rate", "rate_limit_rate")
            for value in (-0.1, 1.5, float("nan"), float("inf"))
        ),
        (flaky("binance", retry_after_ms=60_001), grpc.StatusCode.INVALID_ARGUMENT, "BAD_RETRY_AFTER_MS"),
    ],
)
async def test_set_fault_refusals_change_nothing(
    stub: simexchange_pb2_grpc.SimulatedExchangeServiceStub,
    request_: pb.SetFaultRequest,
    code: grpc.StatusCode,
    reason: str,
) -> None:
    assert await refused(stub.SetFault(request_)) == (code, reason)
    assert (await stub.ListMarkets(pb.ListMarketsRequest(broker="binance"))).markets


def error_info(call_error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    """The one ErrorInfo carried by a refused call's trailing status."""
    (value,) = [v for k, v in call_error.trailing_metadata() if k == "grpc-status-details-bin"]
    (detail,) = status_pb2.Status.FromString(value).details
    info = error_details_pb2.ErrorInfo()
    assert detail.Unpack(info)
    return info


async def refusal(call: Awaitable[object]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return raised.value


async def test_set_fault_refusals_keep_the_fault_in_force(
    server: RunningServer, stub: simexchange_pb2_grpc.SimulatedExchangeServiceStub
) -> None:
    await stub.SetFault(flaky("kraken", error_rate=1))
    assert await refused(stub.SetFault(flaky("kraken", rate_limit_rate=2))) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "BAD_RATE_LIMIT_RATE",
    )
    assert isinstance(server.app, App)
    assert server.app.servicer.fault("kraken").error_rate == 1
    assert await refused(stub.ListMarkets(pb.ListMarketsRequest(broker="kraken"))) == (
        grpc.StatusCode.UNAVAILABLE,
        "EXCHANGE_ERROR",
    )


async def test_error_rate_one_refuses_every_call_and_does_nothing(
    stub: simexchange_pb2_grpc.SimulatedExchangeServiceStub,
) -> None:
    balances = pb.GetBalancesRequest(broker="coinbase", account_id="acct-1")
    before = await stub.GetBalances(balances)
    await stub.SetFault(flaky("coinbase", error_rate=1))

    for name, call in every_call(stub, "coinbase").items():
        assert await refused(call()) == (grpc.StatusCode.UNAVAILABLE, "EXCHANGE_ERROR"), name
    assert (await stub.ListMarkets(pb.ListMarketsRequest(broker="kraken"))).markets  # other brokers untouched

    await stub.SetFault(flaky("coinbase"))
    assert await refused(
        stub.GetOrder(pb.GetOrderRequest(broker="coinbase", account_id="acct-1", client_order_id="f-1"))
    ) == (grpc.StatusCode.NOT_FOUND, "ORDER_NOT_FOUND")
    assert await stub.GetBalances(balances) == before


async def test_rate_limit_rate_one_refuses_with_a_retry_after_hint_and_does_nothing(
    stub: simexchange_pb2_grpc.SimulatedExchangeServiceStub,
) -> None:
    balances = pb.GetBalancesRequest(broker="alpaca", account_id="acct-1")
    before = await stub.GetBalances(balances)
    # A 429 is decided before a 5xx would be.
    await stub.SetFault(flaky("alpaca", rate_limit_rate=1, error_rate=1, retry_after_ms=1500))

    for name, call in every_call(stub, "alpaca").items():
        failure = await refusal(call())
        assert failure.code() is grpc.StatusCode.RESOURCE_EXHAUSTED, name
        info = error_info(failure)
        assert (info.reason, info.metadata["retry_after_ms"]) == ("RATE_LIMITED", "1500"), name

    # Without retry_after_ms the refusal carries no hint rather than "retry at once".
    await stub.SetFault(flaky("alpaca", rate_limit_rate=1))
    info = error_info(await refusal(stub.ListMarkets(pb.ListMarketsRequest(broker="alpaca"))))
    assert info.reason == "RATE_LIMITED" and "retry_after_ms" not in info.metadata

    await stub.SetFault(flaky("alpaca"))
    assert await refused(
        stub.GetOrder(pb.GetOrderRequest(broker="alpaca", account_id="acct-1", client_order_id="f-1"))
    ) == (grpc.StatusCode.NOT_FOUND, "ORDER_NOT_FOUND")
    assert await stub.GetBalances(balances) == before


async def test_an_outage_is_answered_before_any_dice(
    stub: simexchange_pb2_grpc.SimulatedExchangeServiceStub,
) -> None:
    await stub.SetFault(flaky("binance", mode=pb.FAULT_MODE_UNAVAILABLE, rate_limit_rate=1, error_rate=1))
    assert await refused(stub.ListMarkets(pb.ListMarketsRequest(broker="binance"))) == UNAVAILABLE


async def test_a_lost_response_is_unavailable_but_the_order_was_executed(
    stub: simexchange_pb2_grpc.SimulatedExchangeServiceStub,
) -> None:
    await stub.SetFault(flaky("kraken", lose_response_rate=1))

    assert await refused(stub.PlaceOrder(place(broker="kraken", client_order_id="lost-1"))) == (
        grpc.StatusCode.UNAVAILABLE,
        "RESPONSE_LOST",
    )
    # Only PlaceOrder loses answers: the lookup by client order id finds the order, filled.
    found = await stub.GetOrder(
        pb.GetOrderRequest(broker="kraken", account_id="acct-1", client_order_id="lost-1")
    )
    assert found.order.state == pb.ORDER_STATE_FILLED and found.order.filled_quantity == "0.01"
    # A refusal is answered, never lost: the id is taken, and a bad order is still a bad order.
    assert await refused(stub.PlaceOrder(place(broker="kraken", client_order_id="lost-1"))) == (
        grpc.StatusCode.ALREADY_EXISTS,
        "DUPLICATE_CLIENT_ORDER_ID",
    )
    bad = place(broker="kraken", client_order_id="lost-2", quantity="-1")
    assert await refused(stub.PlaceOrder(bad)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ORDER",
    )


async def outcomes(stub: simexchange_pb2_grpc.SimulatedExchangeServiceStub, calls: int) -> list[str]:
    """What `calls` ListMarkets calls to binance got: "ok" or the refusal's reason."""
    seen = []
    for _ in range(calls):
        try:
            await stub.ListMarkets(pb.ListMarketsRequest(broker="binance"))
            seen.append("ok")
        except grpc.aio.AioRpcError as exc:
            seen.append(reason_of(exc))
    return seen


async def test_seeded_dice_replay_the_same_scenario(
    stub: simexchange_pb2_grpc.SimulatedExchangeServiceStub,
) -> None:
    scenario = flaky("binance", error_rate=0.3, rate_limit_rate=0.2, retry_after_ms=100, seed=42)
    await stub.SetFault(scenario)
    first = await outcomes(stub, 200)
    await stub.SetFault(scenario)  # fresh dice from the same seed
    assert await outcomes(stub, 200) == first

    # Both kinds strike, about as often as asked (429s first, then 5xx on what is left).
    assert 20 <= first.count("RATE_LIMITED") <= 60
    assert 30 <= first.count("EXCHANGE_ERROR") <= 70
    assert first.count("ok") == 200 - first.count("RATE_LIMITED") - first.count("EXCHANGE_ERROR")

    await stub.SetFault(flaky("binance", error_rate=0.3, rate_limit_rate=0.2, retry_after_ms=100, seed=43))
    assert await outcomes(stub, 200) != first


async def test_mode_none_with_everything_zero_resets_the_broker(
    server: RunningServer, stub: simexchange_pb2_grpc.SimulatedExchangeServiceStub
) -> None:
    assert isinstance(server.app, App)
    await stub.SetFault(
        flaky(
            "coinbase",
            mode=pb.FAULT_MODE_UNAVAILABLE,
            latency_ms=50,
            error_rate=1,
            lose_response_rate=1,
            rate_limit_rate=1,
            retry_after_ms=500,
            seed=9,
        )
    )
    assert server.app.servicer.fault("coinbase").active

    # SetFault itself is never faulted: it is how a fault is lifted.
    await stub.SetFault(flaky("coinbase"))
    assert server.app.servicer.fault("coinbase") == NO_FAULT
    for call in every_call(stub, "coinbase").values():
        await call()  # each answers normally again, PlaceOrder included


async def test_a_seed_alone_is_no_fault(
    server: RunningServer, stub: simexchange_pb2_grpc.SimulatedExchangeServiceStub
) -> None:
    assert isinstance(server.app, App)
    await stub.SetFault(flaky("kraken", seed=7, retry_after_ms=300))
    assert server.app.servicer.fault("kraken") == NO_FAULT


async def test_list_orders_shows_what_was_executed_page_by_page_even_through_an_outage(
    stub: simexchange_pb2_grpc.SimulatedExchangeServiceStub,
) -> None:
    for k in range(5):
        await stub.PlaceOrder(place(account_id=f"acct-{k % 2}", client_order_id=f"list-{k}"))
    await stub.PlaceOrder(place(broker="kraken", client_order_id="elsewhere"))
    await stub.SetFault(flaky("binance", lose_response_rate=1))
    assert (await refused(stub.PlaceOrder(place(client_order_id="list-lost"))))[1] == "RESPONSE_LOST"
    # An inspection hook: an outage of the simulated exchange does not hide its orders.
    await stub.SetFault(pb.SetFaultRequest(broker="binance", mode=pb.FAULT_MODE_UNAVAILABLE))

    seen, token, pages = [], "", 0
    while True:
        page = await stub.ListOrders(pb.ListOrdersRequest(broker="binance", page_size=4, page_token=token))
        seen += page.orders
        pages += 1
        if not (token := page.next_page_token):
            break
    assert pages == 2
    assert [o.client_order_id for o in seen] == [f"list-{k}" for k in range(5)] + ["list-lost"]
    assert [o.account_id for o in seen] == ["acct-0", "acct-1", "acct-0", "acct-1", "acct-0", "acct-1"]
    assert {o.state for o in seen} == {pb.ORDER_STATE_FILLED} and all(o.fills for o in seen)

    one = await stub.ListOrders(pb.ListOrdersRequest(broker="binance", account_id="acct-1"))
    assert [o.client_order_id for o in one.orders] == ["list-1", "list-3", "list-lost"]
    assert one.next_page_token == ""
    assert (await stub.ListOrders(pb.ListOrdersRequest(broker="coinbase"))).orders == []


@pytest.mark.parametrize(("fields", "reason"), [
    ({"broker": ""}, "BAD_BROKER"),
    ({"broker": "nasdaq"}, "UNKNOWN_BROKER"),
    ({"page_size": 5001}, "BAD_PAGE_SIZE"),
    ({"page_token": "abc"}, "BAD_PAGE_TOKEN"),
    ({"page_token": "-1"}, "BAD_PAGE_TOKEN"),
    ({"page_token": "١٢"}, "BAD_PAGE_TOKEN"),  # digits, but not ASCII ones
    ({"account_id": "x" * 1000}, "BAD_ACCOUNT_ID"),
])
async def test_list_orders_refusals(
    stub: simexchange_pb2_grpc.SimulatedExchangeServiceStub, fields: dict[str, object], reason: str
) -> None:
    request = pb.ListOrdersRequest(**{"broker": "binance", **fields})  # type: ignore[arg-type]
    code, got = await refused(stub.ListOrders(request))
    assert (code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND), got) == (True, reason)
