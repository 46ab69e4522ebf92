"""The dangerous faults on the live path: each exchange's emulator executes the order but drops 30%
of the answers. 500 orders per exchange, through the executor and the ccxt venue, must give exactly
500 exchange orders, each resolved to its true state (looked up by the exchange's own idempotency
key), with every fill recorded once."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from services.domain.brokers import BROKERS
from services.domain.signal import ExecutionMethod, Side, Signal, SignalType
from services.domain.states import Status
from services.executor.engine import ExecutionConfig, ExecutorEngine
from services.executor.venues.base import (
    Account,
    ExchangeUnavailable,
    OrderNotFound,
    OrderRequest,
    OrderType,
)
from services.executor.venues.live import CcxtVenue, adapter
from services.runtime.wire import STATUS_FROM_PB
from services.simexchange.network import Fault
from tests.emulators import emulated, venue_client_order_id
from tests.fakes import MemoryLedger

ORDERS = 500
USERS = 10


@pytest.mark.parametrize("broker", BROKERS)
async def test_lost_responses_never_duplicate_or_lose_an_order(broker: str) -> None:
    # The exchanges' own pacing is off on both sides: this is about idempotency, not rate limits.
    async with emulated(broker, seed=9, rate_limits=False) as emu:
        accounts = {f"user-{i}": await emu.account(broker, f"user-{i}") for i in range(USERS)}

        async def account_of(user_id: str) -> Account:
            return accounts[user_id]

        # An operator key for the exchanges that answer market reads only signed (alpaca).
        market = await emu.account(broker, "market-data")
        venue = CcxtVenue(adapter(broker), base_url=emu.url(broker), timeout_s=10.0, market_account=market)
        lookups = 0
        real_fetch = venue.fetch_order

        async def counted_fetch(*args: object) -> object:
            nonlocal lookups
            lookups += 1
            return await real_fetch(*args)  # type: ignore[arg-type]

        venue.fetch_order = counted_fetch  # type: ignore[method-assign]
        engine = ExecutorEngine(
            broker, venue, MemoryLedger(),
            ExecutionConfig(concurrency=16, lookup_backoff_s=0.01, rate_limits=False), accounts=account_of,
        )
        try:
            await engine.load_markets()
            engine.start_workers()
            emu.app.network.set(broker, Fault(lose_response_rate=0.3, seed=17))

            async def order(i: int) -> list:
                signal = Signal(f"amb-{i}", f"user-{i % USERS}", "ETH-USD", Side.BUY, Decimal(40), SignalType.EXIT)
                return [u async for u in engine.execute(signal, ExecutionMethod.MARKET, 2)]

            results = await asyncio.gather(*(order(i) for i in range(ORDERS)))
            exchange = emu.app.exchange
            assert exchange.order_count(broker) == ORDERS  # no order placed twice, none missing
            outcomes: dict[str, int] = {}
            for i, updates in enumerate(results):
                status = STATUS_FROM_PB[updates[-1].status]
                outcomes[status.value] = outcomes.get(status.value, 0) + 1
                user = f"user-{i % USERS}"
                truth = exchange.get_order(broker, user, client_order_id=venue_client_order_id(broker, user, f"amb-{i}"))
                # The ledger tells the exchange's truth: filled quantity, and every fill once.
                assert Decimal(updates[-1].filled_quantity) == truth.filled_quantity
                fills = [f.venue_trade_id for u in updates for f in u.fills]
                assert len(fills) == len(set(fills))
                assert status is Status.FILLED and truth.filled_quantity == truth.quantity
            print(f"\n{broker}: {ORDERS} orders, 30% of answers lost: {exchange.order_count(broker)} exchange "
                  f"orders; outcomes {outcomes}; {lookups} look-ups by client order id")
            assert outcomes == {Status.FILLED.value: ORDERS}
            assert 100 < lookups < 300  # about 150 answers were lost, each resolved by a look-up
        finally:
            await engine.stop()
            await venue.close()



@pytest.mark.parametrize("broker", BROKERS)
async def test_a_timed_out_order_is_unavailable_then_found_by_its_client_order_id(broker: str) -> None:
    """The client gives up (timeout) while the request is still on its way; the exchange executes
    it a moment later. The venue says unavailable (outcome unknown, never a refusal), and the
    look-up by client order id then finds the one order the exchange holds."""
    async with emulated(broker, seed=5) as emu:
        account = await emu.account(broker, "slow-user")
        market = await emu.account(broker, "market-data")
        venue = CcxtVenue(adapter(broker), base_url=emu.url(broker), timeout_s=0.2, market_account=market)
        try:
            markets = await venue.load_markets()
            book = await venue.fetch_order_book("ETH-USD")
            assert book.best_ask is not None
            lot = markets["ETH-USD"].lot_size
            quantity = max(markets["ETH-USD"].min_quantity, (Decimal(40) / book.best_ask // lot) * lot)
            request = OrderRequest("slow-order-1", "ETH-USD", Side.BUY, OrderType.MARKET, quantity)
            emu.app.network.set(broker, Fault(latency_s=0.5, seed=3))
            with pytest.raises(ExchangeUnavailable):
                await venue.create_order(account, request)
            emu.app.network.set(broker, Fault())
            exchange = emu.app.exchange
            for _ in range(100):  # the delayed request lands about 0.3 s after the client gave up
                if exchange.order_count(broker):
                    break
                await asyncio.sleep(0.02)
            if broker == "coinbase":
                # Its create begins with a search of the orders (no look-up by client id exists):
                # that is what timed out, so nothing was sent, and the look-up says so.
                with pytest.raises(OrderNotFound):
                    await venue.fetch_order(account, "ETH-USD", "slow-order-1")
                assert exchange.order_count(broker) == 0
            else:
                found = await venue.fetch_order(account, "ETH-USD", "slow-order-1")
                assert found.filled_quantity == quantity and exchange.order_count(broker) == 1
        finally:
            await venue.close()
