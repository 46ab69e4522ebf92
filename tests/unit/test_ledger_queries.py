"""The ledger's read side on a real SQLite file: ListOrders, ListFills, the daily summary."""

from __future__ import annotations

import base64
import sqlite3
from collections.abc import AsyncIterator
from decimal import Decimal

import grpc
import pytest
from google.protobuf import timestamp_pb2
from nija.aggregator.v1 import aggregator_pb2 as a
from nija.common.v1 import common_pb2 as c

from services.aggregator.backends import is_postgres
from services.aggregator.ledger import MAX_PAGE_BYTES, Ledger
from services.domain.signal import MAX_METADATA_ENTRIES, MAX_METADATA_VALUE
from tests.unit.test_ledger import fill, refused, signal, to_executing, update


class Clock:
    """The ledger's clock, set by the test: created_at and recorded_at are what it says."""

    def __init__(self, text: str = "2024-03-05T10:00:00Z") -> None:
        self.now = timestamp_pb2.Timestamp()
        self.set(text)

    def set(self, text: str) -> None:
        self.now.FromJsonString(text)

    def __call__(self) -> timestamp_pb2.Timestamp:
        copy = timestamp_pb2.Timestamp()
        copy.CopyFrom(self.now)
        return copy


def ts(text: str) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromJsonString(text)
    return out


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def ledger(database_url: str, clock: Clock) -> AsyncIterator[Ledger]:
    """On SQLite and on PostgreSQL."""
    store = Ledger(database_url, clock=clock)
    await store.open()
    yield store
    await store.close()


async def open_order(
    ledger: Ledger,
    signal_id: str,
    broker: str,
    *,
    user_id: str = "u1",
    order_quantity: str = "",
    **signal_fields: object,
) -> None:
    """Created, routed to `broker`, executing."""
    await ledger.create_order(signal(signal_id, user_id, **signal_fields))
    for status, name in (
        (c.EXECUTION_STATUS_ROUTING, "routing"),
        (c.EXECUTION_STATUS_QUEUED, "queued"),
        (c.EXECUTION_STATUS_EXECUTING, "executing"),
    ):
        await ledger.record(
            update(
                status,
                f"{signal_id}:{name}",
                signal_id,
                user_id,
                broker=broker,
                order_quantity=order_quantity if status == c.EXECUTION_STATUS_EXECUTING else "",
            )
        )


async def ids(ledger: Ledger, **query: object) -> list[str]:
    orders, token = await ledger.list_orders("u1", **query)  # type: ignore[arg-type]
    assert token == ""
    return [o.signal_id for o in orders]


# -- list_orders ------------------------------------------------------------------------------


async def test_list_orders_filters_by_status_pair_broker_and_time(ledger: Ledger, clock: Clock) -> None:
    clock.set("2024-03-05T10:00:00Z")
    await to_executing(ledger, "o1", order_quantity="1")
    await ledger.record(update(c.EXECUTION_STATUS_FILLED, "o1:filled", "o1", fills=[fill("t1", "1")]))
    clock.set("2024-03-05T11:00:00Z")
    await open_order(ledger, "o2", "binance", pair="ETH-USD")
    clock.set("2024-03-05T12:00:00Z")
    await ledger.create_order(signal("o3"))  # never routed
    clock.set("2024-03-06T09:00:00Z")
    await open_order(ledger, "o4", "binance")
    await ledger.record(update(c.EXECUTION_STATUS_CANCELLED, "o4:cancelled", "o4"))
    await ledger.create_order(signal("x1", "someone-else"))

    assert await ids(ledger) == ["o4", "o3", "o2", "o1"]
    assert await ids(ledger, statuses=[c.EXECUTION_STATUS_FILLED, c.EXECUTION_STATUS_CANCELLED]) == ["o4", "o1"]
    assert await ids(ledger, statuses=[c.EXECUTION_STATUS_PENDING]) == ["o3"]
    assert await ids(ledger, pair="ETH-USD") == ["o2"]
    assert await ids(ledger, broker="binance") == ["o4", "o2"]
    assert await ids(ledger, broker="kraken") == ["o1"]
    assert await ids(ledger, broker="coinbase") == []
    # created_from is inclusive, created_before exclusive.
    window = dict(created_from=ts("2024-03-05T11:00:00Z"), created_before=ts("2024-03-06T09:00:00Z"))
    assert await ids(ledger, **window) == ["o3", "o2"]
    assert await ids(ledger, created_from=ts("2024-03-05T11:00:00.000000001Z")) == ["o4", "o3"]
    assert await ids(ledger, created_before=ts("2024-03-05T11:00:00Z")) == ["o1"]
    assert await ids(ledger, pair="BTC-USD", broker="binance", statuses=[c.EXECUTION_STATUS_CANCELLED]) == ["o4"]
    # An unset Timestamp is no bound.
    assert await ids(ledger, created_from=timestamp_pb2.Timestamp()) == ["o4", "o3", "o2", "o1"]

    orders, _ = await ledger.list_orders("u1", pair="ETH-USD")
    assert (orders[0].broker, orders[0].status, orders[0].created_at) == (
        "binance",
        c.EXECUTION_STATUS_EXECUTING,
        ts("2024-03-05T11:00:00Z"),
    )
    assert await ledger.list_orders("nobody") == ([], "")


async def test_pages_cover_every_order_once_in_order_while_new_orders_arrive(
    ledger: Ledger, clock: Clock
) -> None:
    # 23 orders over 8 instants: several share a created_at, so signal_id breaks the ties.
    expected: list[tuple[str, str]] = []
    for n in range(23):
        at = f"2024-03-05T10:00:0{n % 8}Z"
        clock.set(at)
        await ledger.create_order(signal(f"s{n:02d}"))
        expected.append((at, f"s{n:02d}"))
    expected.sort(reverse=True)

    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        orders, token = await ledger.list_orders("u1", page_size=5, page_token=token)
        pages += 1
        seen.extend(o.signal_id for o in orders)
        if not token:
            break
        # Orders created between two pages are newer: they belong before the cursor.
        clock.set(f"2024-03-05T11:00:{pages:02d}Z")
        await ledger.create_order(signal(f"new{pages}"))

    assert seen == [signal_id for _, signal_id in expected]
    assert pages == 5  # 5 + 5 + 5 + 5 + 3
    newest, _ = await ledger.list_orders("u1", page_size=4)
    assert [o.signal_id for o in newest] == ["new4", "new3", "new2", "new1"]


async def test_a_page_that_ends_with_the_last_order_has_no_next_token(ledger: Ledger) -> None:
    for n in range(4):
        await ledger.create_order(signal(f"s{n}"))

    first, token = await ledger.list_orders("u1", page_size=2)
    second, last = await ledger.list_orders("u1", page_size=2, page_token=token)

    assert token and last == ""
    assert [o.signal_id for o in first + second] == ["s3", "s2", "s1", "s0"]
    assert len((await ledger.list_orders("u1", page_size=0))[0]) == 4  # 0: the default (100)


async def test_a_page_of_large_orders_is_cut_to_fit_a_response_and_the_next_pages_hold_the_rest(ledger: Ledger) -> None:
    # Each order carries the most metadata a signal may (~33 KiB): 100 of them are ~3.3 MB.
    fat = {f"k{i}": "p" * MAX_METADATA_VALUE for i in range(MAX_METADATA_ENTRIES)}
    for n in range(100):
        await ledger.create_order(signal(f"s{n:03d}", metadata=fat))

    pages, token, seen = [], "", []
    while True:
        orders, token = await ledger.list_orders("u1", page_size=100, page_token=token)
        pages.append(a.ListOrdersResponse(orders=orders, next_page_token=token).ByteSize())
        seen.extend(o.signal_id for o in orders)
        if not token:
            break
    assert seen == [f"s{n:03d}" for n in reversed(range(100))]  # each once, in order
    assert len(pages) >= 4 and max(pages) <= MAX_PAGE_BYTES, pages
    assert min(pages[:-1]) > MAX_PAGE_BYTES - 40_000, pages  # each cut page as full as one order allows


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "token",
    [
        "not a token!",
        _b64(b"not json"),
        _b64(b"[1, 2]"),
        _b64(b'{"c": "2024-03-05T10:00:00Z"}'),
        _b64(b'{"c": 5, "s": "s1"}'),
        _b64(b'{"c": "yesterday", "s": "s1"}'),
        _b64(b'{"c": "2024-03-05T10:00:00Z", "s": "bad id!"}'),
        "A" * 2000,
    ],
)
async def test_a_malformed_page_token_is_invalid(ledger: Ledger, token: str) -> None:
    await ledger.create_order(signal())
    await refused(ledger.list_orders("u1", page_token=token), grpc.StatusCode.INVALID_ARGUMENT, "BAD_PAGE_TOKEN")


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        (dict(user_id=""), "BAD_USER_ID"),
        (dict(page_size=1001), "BAD_PAGE_SIZE"),
        (dict(statuses=[c.EXECUTION_STATUS_UNSPECIFIED]), "BAD_STATUSES"),
        (dict(statuses=[99]), "BAD_STATUSES"),
        (dict(pair="btcusd"), "BAD_PAIR"),
        (dict(broker="b" * 65), "BAD_BROKER"),
        (dict(created_from=timestamp_pb2.Timestamp(seconds=-10**12)), "BAD_CREATED_FROM"),
    ],
)
async def test_malformed_order_queries_are_invalid(ledger: Ledger, query: dict[str, object], reason: str) -> None:
    query = {"user_id": "u1", **query}
    await refused(ledger.list_orders(**query), grpc.StatusCode.INVALID_ARGUMENT, reason)  # type: ignore[arg-type]


async def test_list_orders_walks_the_index(ledger: Ledger) -> None:
    if is_postgres(ledger.path):
        pytest.skip("reads SQLite's query plan")
    db = sqlite3.connect(f"file:{ledger.path}?mode=ro", uri=True)
    try:
        plan = " ".join(
            str(row[-1])
            for row in db.execute(
                "EXPLAIN QUERY PLAN SELECT * FROM orders WHERE user_id = ? AND created_at < ?"
                " ORDER BY created_at DESC, signal_id DESC LIMIT 10",
                ("u1", "2024"),
            )
        )
    finally:
        db.close()
    assert "orders_by_user_created" in plan and "TEMP B-TREE" not in plan, plan


# -- list_fills -------------------------------------------------------------------------------


async def test_list_fills_returns_the_fills_in_recorded_order(ledger: Ledger) -> None:
    await to_executing(ledger, order_quantity="1")
    first = [
        fill("t9", "0.25", price="50000.10"),
        c.Fill(
            venue_trade_id="t3",
            price="50001",
            quantity="0.25",
            fee="-0.01",
            fee_currency="USD",
            liquidity=c.LIQUIDITY_MAKER,
            time=ts("2024-03-05T09:59:59.5Z"),
        ),
    ]
    await ledger.record(update(c.EXECUTION_STATUS_PARTIAL_FILL, "s1:p1", fills=first))
    await ledger.record(
        update(c.EXECUTION_STATUS_FILLED, "s1:filled", broker="binance", fills=[fill("t1", "0.5", fee="0")])
    )
    await to_executing(ledger, "other")
    await ledger.record(update(c.EXECUTION_STATUS_PARTIAL_FILL, "other:p1", "other", fills=[fill("t0", "0.1")]))

    fills = await ledger.list_fills("u1", "s1")

    assert [(f.fill.venue_trade_id, f.broker, f.sequence) for f in fills] == [
        ("t9", "kraken", 5),
        ("t3", "kraken", 5),
        ("t1", "binance", 6),
    ]
    assert {f.signal_id for f in fills} == {"s1"}
    assert (fills[0].fill.price, fills[0].fill.quantity, fills[0].fill.fee) == ("50000.1", "0.25", "0.5")
    assert fills[1].fill == first[1]
    assert fills[2].fill.fee == "0" and not fills[2].fill.HasField("time")


async def test_list_fills_of_an_unknown_order_is_not_found(ledger: Ledger) -> None:
    await to_executing(ledger)
    assert await ledger.list_fills("u1", "s1") == []
    await refused(ledger.list_fills("u1", "nope"), grpc.StatusCode.NOT_FOUND, "ORDER_NOT_FOUND")
    await refused(ledger.list_fills("u2", "s1"), grpc.StatusCode.NOT_FOUND, "ORDER_NOT_FOUND")
    await refused(ledger.list_fills("u1", ""), grpc.StatusCode.INVALID_ARGUMENT, "BAD_SIGNAL_ID")
    await refused(ledger.list_fills("", "s1"), grpc.StatusCode.INVALID_ARGUMENT, "BAD_USER_ID")


# -- daily_summary ----------------------------------------------------------------------------


def summary(broker: str, orders: int, fills: int, notional: str, fees: str, realized: str) -> a.BrokerSummary:
    return a.BrokerSummary(
        broker=broker, orders=orders, fills=fills, traded_notional=notional, fees=fees, realized_pnl=realized
    )


async def test_daily_summary_by_broker_with_realized_pnl_on_the_selling_broker(
    ledger: Ledger, clock: Clock
) -> None:
    # The day before: 1 BTC bought at 40000 on kraken (opens the position, realizes nothing).
    clock.set("2024-03-04T15:00:00Z")
    await open_order(ledger, "a", "kraken", order_quantity="1")
    await ledger.record(update(c.EXECUTION_STATUS_FILLED, "a:filled", "a", fills=[fill("ta", "1", "40000", "4")]))

    # The day: 2 more BTC on kraken at 41000.01 in two fills. The second fill's venue time is
    # still the day before; the ledger recorded it on the day, so the day counts it.
    clock.set("2024-03-05T09:00:00Z")
    await open_order(ledger, "b", "kraken", order_quantity="2")
    late = fill("tb2", "0.5", "41000.01", "2.05")
    late.time.CopyFrom(ts("2024-03-04T23:59:59.9Z"))
    await ledger.record(
        update(c.EXECUTION_STATUS_FILLED, "b:filled", "b", fills=[fill("tb1", "1.5", "41000.01", "6.15"), late])
    )
    # Position: 3 BTC costing 40000 + 82000.02 = 122000.02.
    # Then 1 of the 3 sold on binance at 45000, a partial fill of a 1.5 BTC sell:
    #   cost removed = 122000.02 * 1 / 3 = 40666.673333333333|33 -> 40666.673333333333 (1e-12)
    #   realized     = 45000 - 40666.673333333333 = 4333.326666666667 (binance's)
    clock.set("2024-03-05T14:00:00Z")
    await open_order(ledger, "c", "binance", order_quantity="1.5", side=c.SIDE_SELL)
    await ledger.record(update(c.EXECUTION_STATUS_PARTIAL_FILL, "c:p1", "c", fills=[fill("tc1", "1", "45000", "4.5")]))
    # Orders of the day without fills: one routed to kraken, one never routed.
    await open_order(ledger, "d", "kraken", pair="ETH-USD")
    await ledger.create_order(signal("e"))
    # Another user's trades are not u1's.
    await open_order(ledger, "z", "binance", user_id="u2", order_quantity="1")
    await ledger.record(update(c.EXECUTION_STATUS_FILLED, "z:filled", "z", "u2", fills=[fill("tz", "1", "1", "1")]))
    # The next day: the rest of the sell, 0.5 at 46000 (position then: 2 BTC costing
    # 122000.02 - 40666.673333333333 = 81333.346666666667):
    #   cost removed = 81333.346666666667 * 0.5 / 2 = 20333.33666666666675 -> 20333.336666666667
    #   realized     = 23000 - 20333.336666666667 = 2666.663333333333
    clock.set("2024-03-06T00:00:00Z")
    await ledger.record(update(c.EXECUTION_STATUS_FILLED, "c:filled", "c", fills=[fill("tc2", "0.5", "46000", "2.3")]))

    day = await ledger.daily_summary("u1", "2024-03-05")

    assert day.day == "2024-03-05"
    assert list(day.brokers) == [
        summary("", 1, 0, "0", "0", "0"),
        summary("binance", 1, 1, "45000", "4.5", "4333.326666666667"),
        summary("kraken", 2, 2, "82000.02", "8.2", "0"),
    ]
    assert day.total == summary("", 4, 3, "127000.02", "12.7", "4333.326666666667")
    # The realized figures add up with the positions the permission service would build.
    assert Decimal(day.total.realized_pnl) + Decimal("2666.663333333333") == Decimal("6999.99")

    before = await ledger.daily_summary("u1", "2024-03-04")
    assert list(before.brokers) == [summary("kraken", 1, 1, "40000", "4", "0")]

    after = await ledger.daily_summary("u1", "2024-03-06")
    assert list(after.brokers) == [summary("binance", 0, 1, "23000", "2.3", "2666.663333333333")]
    assert after.total == summary("", 0, 1, "23000", "2.3", "2666.663333333333")


async def test_a_day_without_trades_is_all_zeros(ledger: Ledger, clock: Clock) -> None:
    clock.set("2024-03-05T10:00:00Z")
    await to_executing(ledger, order_quantity="1")
    await ledger.record(update(c.EXECUTION_STATUS_FILLED, "s1:filled", fills=[fill("t1", "1")]))

    quiet = await ledger.daily_summary("u1", "2024-03-07")

    assert quiet.day == "2024-03-07"
    assert list(quiet.brokers) == []
    assert quiet.total == summary("", 0, 0, "0", "0", "0")
    assert (await ledger.daily_summary("nobody", "2024-03-05")).total == summary("", 0, 0, "0", "0", "0")


async def test_the_default_day_is_today_utc(ledger: Ledger, clock: Clock) -> None:
    clock.set("2024-03-05T23:59:59.999Z")
    await ledger.create_order(signal())

    today = await ledger.daily_summary("u1")

    assert today.day == "2024-03-05"
    assert today.total.orders == 1


@pytest.mark.parametrize("day", ["2024-3-5", "2024-02-30", "yesterday", "2024-03-05T00:00:00Z", "9999-12-31"])
async def test_a_malformed_day_is_invalid(ledger: Ledger, day: str) -> None:
    await refused(ledger.daily_summary("u1", day), grpc.StatusCode.INVALID_ARGUMENT, "BAD_DAY")
    await refused(ledger.daily_summary("", "2024-03-05"), grpc.StatusCode.INVALID_ARGUMENT, "BAD_USER_ID")
