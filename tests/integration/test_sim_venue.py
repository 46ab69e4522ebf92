"""SimVenue against a real SimulatedExchangeService on port 0: the venue contract, for every broker,
and the error mapping at the edge."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

import grpc
import pytest
from nija.simexchange.v1 import simexchange_pb2 as pb
from nija.simexchange.v1 import simexchange_pb2_grpc

from services.domain.brokers import BROKERS
from services.domain.signal import Side
from services.executor.venues.base import (
    Account,
    AuthenticationFailed,
    DuplicateClientOrderId,
    ExchangeUnavailable,
    InsufficientFunds,
    InvalidOrder,
    Liquidity,
    OrderNotFound,
    OrderRequest,
    OrderState,
    OrderType,
    RateLimited,
)
from services.executor.venues.sim import SimVenue, error_metadata, venue_error
from services.runtime.errors import ServiceError, to_status
from services.runtime.server import Listen, RunningServer
from services.simexchange.app import App, Config, build_app
from tests.contract.venue_contract import VenueContract


async def _start(config: Config) -> RunningServer:
    return await RunningServer(build_app(config), Listen(port=0)).start()


@pytest.fixture
async def sim_server() -> AsyncIterator[RunningServer]:
    running = await _start(Config(seed=11, tick_interval_s=0.05))
    yield running
    await running.stop(0)


def _account() -> Account:
    return Account(user_id="u-1", account_id=f"acct-{uuid.uuid4().hex[:12]}")


class TestSimVenueContract(VenueContract):
    @pytest.fixture(params=BROKERS)
    async def venue(
        self, request: pytest.FixtureRequest, sim_server: RunningServer
    ) -> AsyncIterator[SimVenue]:
        venue = SimVenue(request.param, sim_server.target, timeout_s=5.0)
        yield venue
        await venue.close()

    @pytest.fixture
    def account(self) -> Account:
        return _account()


# --- the simulated exchange's own behaviour, through the venue --------------------------------


@pytest.fixture
async def binance(sim_server: RunningServer) -> AsyncIterator[SimVenue]:
    venue = SimVenue("binance", sim_server.target)
    yield venue
    await venue.close()


async def test_insufficient_funds(binance: SimVenue) -> None:
    request = OrderRequest("big-1", "BTC-USD", Side.SELL, OrderType.LIMIT, Decimal(100), Decimal(70000))
    with pytest.raises(InsufficientFunds):
        await binance.create_order(_account(), request)


async def test_unknown_pair_and_bad_precision_are_invalid_orders(binance: SimVenue) -> None:
    account = _account()
    with pytest.raises(InvalidOrder):
        await binance.create_order(
            account, OrderRequest("x-1", "XMR-USD", Side.BUY, OrderType.MARKET, Decimal(1))
        )
    with pytest.raises(InvalidOrder):
        await binance.create_order(
            account,
            OrderRequest("x-2", "BTC-USD", Side.BUY, OrderType.LIMIT, Decimal("0.1"), Decimal("50000.001")),
        )
    with pytest.raises(InvalidOrder):
        await binance.fetch_order_book("XMR-USD")


async def test_duplicate_after_a_fill_still_refused(binance: SimVenue) -> None:
    account = _account()
    request = OrderRequest("dup-1", "ETH-USD", Side.BUY, OrderType.MARKET, Decimal("0.5"))
    first = await binance.create_order(account, request)
    assert first.state is OrderState.FILLED
    with pytest.raises(DuplicateClientOrderId):
        await binance.create_order(account, request)
    # The first order is what a lookup by its id returns.
    assert await binance.fetch_order(account, "ETH-USD", "dup-1") == first


async def test_orders_are_scoped_to_their_account(binance: SimVenue) -> None:
    owner, other = _account(), _account()
    await binance.create_order(
        owner, OrderRequest("own-1", "ETH-USD", Side.BUY, OrderType.MARKET, Decimal("0.5"))
    )
    with pytest.raises(OrderNotFound):
        await binance.fetch_order(other, "ETH-USD", "own-1")


async def test_resting_order_fills_as_maker_on_a_tick(sim_server: RunningServer, binance: SimVenue) -> None:
    app = sim_server.app
    assert isinstance(app, App)
    account = _account()
    book = await binance.fetch_order_book("BTC-USD")
    assert book.best_bid is not None
    limit = (book.best_bid * Decimal("0.95")).quantize(Decimal("0.01"))
    placed = await binance.create_order(
        account, OrderRequest("mk-1", "BTC-USD", Side.BUY, OrderType.LIMIT, Decimal("0.01"), limit)
    )
    assert placed.state is OrderState.OPEN

    app.exchange.set_reference_price("BTC", limit * Decimal("0.97"))
    for _ in range(100):
        report = await binance.fetch_order(account, "BTC-USD", "mk-1")
        if report.state is OrderState.FILLED:
            break
        await asyncio.sleep(0.02)

    assert report.state is OrderState.FILLED
    (fill,) = report.fills
    assert fill.liquidity is Liquidity.MAKER and fill.price == limit
    assert fill.fee == limit * Decimal("0.01") * Decimal("0.001")
    assert fill.time is not None


async def test_a_call_past_its_deadline_is_exchange_unavailable() -> None:
    slow = await _start(Config(seed=1, latency_ms=500))
    venue = SimVenue("kraken", slow.target, timeout_s=0.05)
    try:
        with pytest.raises(ExchangeUnavailable) as raised:
            await venue.load_markets()
        assert raised.value.transport
    finally:
        await venue.close()
        await slow.stop(0)


async def test_latency_is_added_to_every_request() -> None:
    slow = await _start(Config(seed=1, latency_ms=80))
    venue = SimVenue("kraken", slow.target)
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await venue.fetch_order_book("BTC-USD")
        assert loop.time() - started >= 0.08
    finally:
        await venue.close()
        await slow.stop(0)


async def test_no_server_is_exchange_unavailable(sim_server: RunningServer) -> None:
    target = sim_server.target
    await sim_server.stop(0)
    venue = SimVenue("coinbase", target, timeout_s=0.5)
    try:
        with pytest.raises(ExchangeUnavailable):
            await venue.fetch_balances(_account())
    finally:
        await venue.close()


async def test_markets_carry_the_withdrawal_fee(sim_server: RunningServer) -> None:
    fees = {}
    for broker in ("binance", "coinbase"):
        venue = SimVenue(broker, sim_server.target)
        try:
            markets = await venue.load_markets()
        finally:
            await venue.close()
        assert all(m.withdrawal_fee > 0 for m in markets.values())
        fees[broker] = markets["BTC-USD"].withdrawal_fee
    assert fees == {"binance": Decimal("0.0002"), "coinbase": Decimal("0.00005")}


async def test_fee_overrides_are_what_the_venue_reports() -> None:
    running = await _start(Config(seed=1, fee_overrides="kraken=0.001/0.001"))
    venue = SimVenue("kraken", running.target)
    try:
        fees = await venue.fetch_fees()
        assert (fees.maker, fees.taker) == (Decimal("0.001"), Decimal("0.001"))
    finally:
        await venue.close()
        await running.stop(0)


async def _set_fault(
    server: RunningServer, broker: str, mode: int, latency_ms: int = 0, **fields: object
) -> None:
    async with grpc.aio.insecure_channel(server.target) as channel:
        stub = simexchange_pb2_grpc.SimulatedExchangeServiceStub(channel)
        request = pb.SetFaultRequest(
            broker=broker, mode=mode, latency_ms=latency_ms, **fields  # type: ignore[arg-type]
        )
        await stub.SetFault(request)


async def test_an_exchange_outage_is_exchange_unavailable_until_it_ends(
    sim_server: RunningServer, binance: SimVenue
) -> None:
    account = _account()
    request = OrderRequest("out-1", "ETH-USD", Side.BUY, OrderType.MARKET, Decimal("0.5"))
    await _set_fault(sim_server, "binance", pb.FAULT_MODE_UNAVAILABLE)

    calls = {
        "load_markets": binance.load_markets,
        "fetch_fees": binance.fetch_fees,
        "fetch_order_book": lambda: binance.fetch_order_book("ETH-USD"),
        "create_order": lambda: binance.create_order(account, request),
        "fetch_order": lambda: binance.fetch_order(account, "ETH-USD", "out-1"),
        "cancel_order": lambda: binance.cancel_order(account, "ETH-USD", "out-1"),
        "fetch_balances": lambda: binance.fetch_balances(account),
    }
    for name, call in calls.items():
        with pytest.raises(ExchangeUnavailable) as raised:
            await call()
        assert raised.value.transport, name  # counts against the breaker

    await _set_fault(sim_server, "binance", pb.FAULT_MODE_NONE)

    # Nothing was placed during the outage: a lookup finds no order and the same id places now.
    with pytest.raises(OrderNotFound):
        await binance.fetch_order(account, "ETH-USD", "out-1")
    assert (await binance.create_order(account, request)).state is OrderState.FILLED


async def test_fault_latency_past_the_deadline_is_exchange_unavailable(sim_server: RunningServer) -> None:
    venue = SimVenue("kraken", sim_server.target, timeout_s=0.1)
    try:
        await _set_fault(sim_server, "kraken", pb.FAULT_MODE_NONE, latency_ms=300)
        with pytest.raises(ExchangeUnavailable):
            await venue.fetch_order_book("BTC-USD")
        await _set_fault(sim_server, "kraken", pb.FAULT_MODE_NONE)
        assert (await venue.fetch_order_book("BTC-USD")).asks
    finally:
        await venue.close()


def _eth(client_order_id: str, side: Side = Side.BUY) -> OrderRequest:
    return OrderRequest(client_order_id, "ETH-USD", side, OrderType.MARKET, Decimal("0.01"))


async def test_a_lost_response_is_exchange_unavailable_but_the_order_exists(
    sim_server: RunningServer, binance: SimVenue
) -> None:
    account = _account()
    await _set_fault(sim_server, "binance", pb.FAULT_MODE_NONE, lose_response_rate=1)

    with pytest.raises(ExchangeUnavailable) as raised:
        await binance.create_order(account, _eth("lost-1"))
    assert raised.value.transport  # as ambiguous as a timeout

    # Resolved by looking the order up by its client order id: it exists, and it filled.
    found = await binance.fetch_order(account, "ETH-USD", "lost-1")
    assert (found.client_order_id, found.state) == ("lost-1", OrderState.FILLED)
    assert found.filled_quantity == Decimal("0.01")
    assert found.fills
    # Re-sending would be a second order: the venue refuses it, and says so even under the fault.
    with pytest.raises(DuplicateClientOrderId):
        await binance.create_order(account, _eth("lost-1"))


async def _place_resolving_by_lookup(venue: SimVenue, account: Account, orders: int) -> list[str]:
    """Place `orders` market orders, resolving every ambiguous outcome by a lookup by client order
    id (as the executor does); the ids whose answer was lost."""
    lost = []
    for i in range(orders):
        request = _eth(f"s-{i:03d}", Side.BUY if i % 2 == 0 else Side.SELL)
        try:
            await venue.create_order(account, request)
        except ExchangeUnavailable:
            lost.append(request.client_order_id)
            found = await venue.fetch_order(account, "ETH-USD", request.client_order_id)
            assert found.state is OrderState.FILLED
    return lost


async def test_seeded_lost_responses_never_lose_an_order(
    sim_server: RunningServer, binance: SimVenue
) -> None:
    await _set_fault(sim_server, "binance", pb.FAULT_MODE_NONE, lose_response_rate=0.3, seed=20261125)
    account = _account()
    lost = await _place_resolving_by_lookup(binance, account, 200)
    assert 30 <= len(lost) <= 90  # about 0.3 of 200

    found = []
    for i in range(200):
        try:
            found.append(await binance.fetch_order(account, "ETH-USD", f"s-{i:03d}"))
        except OrderNotFound:
            pass
    assert len(found) == 200
    assert {o.client_order_id for o in found} == {f"s-{i:03d}" for i in range(200)}

    # The same seed loses the same answers again: the scenario is repeatable.
    await _set_fault(sim_server, "binance", pb.FAULT_MODE_NONE, lose_response_rate=0.3, seed=20261125)
    assert await _place_resolving_by_lookup(binance, _account(), 200) == lost


async def test_exchange_errors_are_exchange_unavailable_and_do_nothing(
    sim_server: RunningServer, binance: SimVenue
) -> None:
    account = _account()
    before = await binance.fetch_balances(account)
    await _set_fault(sim_server, "binance", pb.FAULT_MODE_NONE, error_rate=1)

    with pytest.raises(ExchangeUnavailable) as raised:
        await binance.create_order(account, _eth("err-1"))
    assert raised.value.transport
    with pytest.raises(ExchangeUnavailable):
        await binance.fetch_order(account, "ETH-USD", "err-1")

    await _set_fault(sim_server, "binance", pb.FAULT_MODE_NONE)
    with pytest.raises(OrderNotFound):
        await binance.fetch_order(account, "ETH-USD", "err-1")
    assert await binance.fetch_balances(account) == before
    assert (await binance.create_order(account, _eth("err-1"))).state is OrderState.FILLED


async def test_rate_limits_are_rate_limited_with_the_exchange_retry_after(
    sim_server: RunningServer, binance: SimVenue
) -> None:
    account = _account()
    before = await binance.fetch_balances(account)
    await _set_fault(sim_server, "binance", pb.FAULT_MODE_NONE, rate_limit_rate=1, retry_after_ms=1500)

    with pytest.raises(RateLimited) as raised:
        await binance.create_order(account, _eth("rl-1"))
    assert raised.value.retry_after_s == 1500 / 1000
    assert not raised.value.transport  # a 429 says the exchange is up: it does not trip the breaker
    with pytest.raises(RateLimited):
        await binance.fetch_order_book("ETH-USD")

    await _set_fault(sim_server, "binance", pb.FAULT_MODE_NONE, rate_limit_rate=1)
    with pytest.raises(RateLimited) as raised:
        await binance.load_markets()
    assert raised.value.retry_after_s is None  # no hint given: the caller's own backoff decides

    await _set_fault(sim_server, "binance", pb.FAULT_MODE_NONE)
    with pytest.raises(OrderNotFound):
        await binance.fetch_order(account, "ETH-USD", "rl-1")
    assert await binance.fetch_balances(account) == before


# --- the mapping itself, by code and reason ---------------------------------------------------


def _rpc_error(code: grpc.StatusCode, reason: str = "", **metadata: str) -> grpc.aio.AioRpcError:
    trailing = grpc.aio.Metadata()
    if reason:
        status = to_status(ServiceError(code, reason, "the message text is never read", **metadata))
        trailing = grpc.aio.Metadata(*status.trailing_metadata)
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailing, "details")


@pytest.mark.parametrize(
    ("code", "reason", "expected"),
    [
        (grpc.StatusCode.UNAVAILABLE, "", ExchangeUnavailable),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "", ExchangeUnavailable),
        (grpc.StatusCode.INTERNAL, "INTERNAL", ExchangeUnavailable),
        (grpc.StatusCode.ALREADY_EXISTS, "DUPLICATE_CLIENT_ORDER_ID", DuplicateClientOrderId),
        (grpc.StatusCode.NOT_FOUND, "ORDER_NOT_FOUND", OrderNotFound),
        (grpc.StatusCode.NOT_FOUND, "UNKNOWN_PAIR", InvalidOrder),
        (grpc.StatusCode.NOT_FOUND, "UNKNOWN_BROKER", InvalidOrder),
        (grpc.StatusCode.NOT_FOUND, "", InvalidOrder),
        (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ORDER", InvalidOrder),
        (grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS", InsufficientFunds),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "", RateLimited),
        (grpc.StatusCode.UNAUTHENTICATED, "", AuthenticationFailed),
        (grpc.StatusCode.PERMISSION_DENIED, "", AuthenticationFailed),
    ],
)
def test_grpc_errors_map_to_typed_venue_errors(code: grpc.StatusCode, reason: str, expected: type) -> None:
    assert type(venue_error(_rpc_error(code, reason))) is expected


@pytest.mark.parametrize(
    ("error", "retry_after_s"),
    [
        (_rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED", retry_after_ms="250"), 0.25),
        (_rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED", retry_after_ms="0"), 0.0),
        (_rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED"), None),
        (_rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED), None),
        (_rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED", retry_after_ms="soon"), None),
        (_rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED", retry_after_ms="-5"), None),
    ],
)
def test_rate_limited_carries_the_retry_after_hint(
    error: grpc.aio.AioRpcError, retry_after_s: float | None
) -> None:
    mapped = venue_error(error)
    assert type(mapped) is RateLimited
    assert mapped.retry_after_s == retry_after_s


def test_error_metadata_reads_the_error_info() -> None:
    error = _rpc_error(
        grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED", retry_after_ms="250", broker="kraken"
    )
    assert error_metadata(error) == {"retry_after_ms": "250", "broker": "kraken"}
    assert error_metadata(_rpc_error(grpc.StatusCode.UNAVAILABLE)) == {}
