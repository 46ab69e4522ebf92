"""The fault run's reconciliation: a clean run is clean, and each way a run can go wrong is
counted under its own figure, with the signal named."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.chaos.reconcile import LedgerOrder, Report, Told, VenueOrder, reconcile
from services.domain.ids import client_order_id

BROKERS = ("coinbase", "kraken", "binance", "alpaca")
Q = Decimal("0.001")


def told(signal: str, user: str = "u1", final: str = "filled", qty: Decimal = Q, **kw: object) -> Told:
    return Told(user, signal, accepted=kw.pop("accepted", True), final=final, filled_quantity=qty, **kw)  # type: ignore[arg-type]


def ledger(signal: str, user: str = "u1", status: str = "filled", qty: Decimal = Q, trades: tuple[str, ...] = ("t1",),
           broker: str = "kraken", side: str = "buy") -> LedgerOrder:
    return LedgerOrder(user, signal, "BTC-USD", side, status, broker, qty, frozenset(trades))


def venue(signal: str, user: str = "u1", broker: str = "kraken", qty: Decimal = Q, trades: tuple[str, ...] = ("t1",)
          ) -> VenueOrder:
    return VenueOrder(broker, user, client_order_id(user, signal, broker, 0), qty, frozenset(trades))


def run(told_: list[Told], ledger_: list[LedgerOrder], venue_: list[VenueOrder],
        positions: dict[tuple[str, str], Decimal] | None = None) -> Report:
    if positions is None:
        positions = {}
        for o in ledger_:
            key = (o.user_id, o.pair)
            positions[key] = positions.get(key, Decimal(0)) + (o.filled_quantity if o.side == "buy" else -o.filled_quantity)
    return reconcile(told_, ledger_, venue_, positions, brokers=BROKERS)


def test_a_clean_run_is_clean_and_counted() -> None:
    report = run(
        [told("s1"), told("s2", final="rejected", qty=Decimal(0)), Told("u1", "s3", accepted=False, refused="USER_RATE_LIMITED")],
        [ledger("s1"), ledger("s2", status="rejected", qty=Decimal(0), trades=())],
        [venue("s1"), VenueOrder("kraken", "u1", client_order_id("u1", "s2", "kraken", 0), Decimal(0), frozenset())],
    )
    assert report.clean
    assert report.figures() == {"accepted": 2, "filled": 1, "rejected": 2, "lost": 0, "duplicated": 0,
                                "ledger_exchange_mismatches": 0, "told_ledger_mismatches": 0,
                                "position_mismatches": 0, "unresolved": 0}


def test_an_accepted_signal_the_ledger_does_not_have_is_lost() -> None:
    report = run([told("s1")], [], [])
    assert report.lost == ["u1/s1: the client was told it was accepted; the ledger has no order"]


def test_an_execution_the_ledger_does_not_know_is_lost() -> None:
    report = run([], [], [venue("ghost")])
    assert len(report.lost) == 1 and "the ledger does not know" in report.lost[0]


def test_an_order_executed_on_two_exchanges_is_a_duplicate() -> None:
    report = run([told("s1")], [ledger("s1", trades=("t1",))],
                 [venue("s1", broker="kraken", trades=("t1",)), venue("s1", broker="binance", trades=("t9",))])
    assert len(report.duplicated) == 1 and "executed 2 times" in report.duplicated[0]
    assert len(report.ledger_exchange_mismatches) == 1  # the ledger also misses the second one's fill


@pytest.mark.parametrize(("venue_trades", "ledger_trades", "words"), [
    (("t1", "t2"), ("t1",), "fills not in the ledger ['t2']"),
    (("t1",), ("t1", "t3"), "ledger fills the exchange never made ['t3']"),
])
def test_fills_that_differ_between_the_ledger_and_the_exchange_are_mismatches(
    venue_trades: tuple[str, ...], ledger_trades: tuple[str, ...], words: str
) -> None:
    report = run([told("s1")], [ledger("s1", trades=ledger_trades)], [venue("s1", trades=venue_trades)])
    [finding] = report.ledger_exchange_mismatches
    assert words in finding


def test_what_the_client_was_told_must_match_the_ledger() -> None:
    report = run([told("s1", final="filled"), Told("u1", "s2", accepted=False, refused="X")],
                 [ledger("s1", status="failed", qty=Decimal(0), trades=()), ledger("s2", status="rejected", qty=Decimal(0), trades=())],
                 [])
    assert len(report.told_ledger_mismatches) == 2


def test_a_client_left_without_a_terminal_state_is_unresolved() -> None:
    report = run([told("s1", final="")], [ledger("s1")], [venue("s1")])
    assert report.unresolved == ["u1/s1: no terminal state told (the ledger says filled)"]


def test_positions_must_be_the_ledgers_net_fills() -> None:
    orders = [ledger("s1", qty=Decimal("0.003"), trades=("a",)), ledger("s2", side="sell", qty=Decimal("0.001"), trades=("b",))]
    executions = [venue("s1", qty=Decimal("0.003"), trades=("a",)), venue("s2", qty=Decimal("0.001"), trades=("b",))]
    ok = run([], orders, executions, {("u1", "BTC-USD"): Decimal("0.002")})
    assert ok.clean
    off = run([], orders, executions, {("u1", "BTC-USD"): Decimal("0.003"), ("u2", "ETH-USD"): Decimal("1")})
    assert len(off.position_mismatches) == 2


def test_another_accounts_order_with_the_same_id_is_not_this_signals() -> None:
    stranger = VenueOrder("kraken", "u2", client_order_id("u1", "s1", "kraken", 0), Q, frozenset({"x"}))
    report = run([told("s1")], [ledger("s1")], [venue("s1"), stranger])
    assert len(report.lost) == 1 and not report.duplicated
