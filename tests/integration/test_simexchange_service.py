"""SimulatedExchangeService over real gRPC: health, wire shapes, canonical codes and ErrorInfo reasons."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nija.common.v1 import common_pb2
from nija.simexchange.v1 import simexchange_pb2 as pb
from nija.simexchange.v1 import simexchange_pb2_grpc

from services.runtime.config import ConfigError, load_config
from services.runtime.errors import reason_of
from services.runtime.server import Listen, RunningServer
from services.simexchange.app import SERVICE_NAME, Config, build_app

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
