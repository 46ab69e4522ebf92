"""The three records of a fault run, compared: what each client was told, what the ledger holds,
and what the (simulated) exchanges really executed; and the positions the permission service
built, against the ledger's fills.

Pure: the run gathers the records (services.chaos.run), this decides what they mean. Every
figure that must be 0 after a correct run has a list of the findings behind it, so a failed run
says which signal went wrong and how.

The fault run sends single-leg market orders (no split, no TWAP): one signal is at most one
executed order on one exchange, whichever executor placed it. Anything more is a duplicate.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal

from services.domain.ids import client_order_id

ZERO = Decimal(0)
FILLED = "filled"


@dataclasses.dataclass(frozen=True)
class Told:
    """What one client was told about one of its signals, at the end of the run (re-attaches included)."""

    user_id: str
    signal_id: str
    #: The mesh took it: the client got at least one update (PENDING or later).
    accepted: bool
    #: The refusal's reason when the mesh refused it outright (then nothing may exist for it).
    refused: str = ""
    #: The terminal status the client was told ("" when it was told none).
    final: str = ""
    filled_quantity: Decimal = ZERO


@dataclasses.dataclass(frozen=True)
class LedgerOrder:
    user_id: str
    signal_id: str
    pair: str
    side: str  # "buy" | "sell"
    status: str
    broker: str
    filled_quantity: Decimal
    #: The venue trade ids of the fills the ledger recorded for it.
    trade_ids: frozenset[str]


@dataclasses.dataclass(frozen=True)
class VenueOrder:
    broker: str
    account_id: str
    client_order_id: str
    filled_quantity: Decimal
    trade_ids: frozenset[str]


@dataclasses.dataclass
class Report:
    accepted: int = 0
    filled: int = 0
    rejected: int = 0  # refused by the mesh, or ended without a fill
    lost: list[str] = dataclasses.field(default_factory=list)
    duplicated: list[str] = dataclasses.field(default_factory=list)
    ledger_exchange_mismatches: list[str] = dataclasses.field(default_factory=list)
    told_ledger_mismatches: list[str] = dataclasses.field(default_factory=list)
    position_mismatches: list[str] = dataclasses.field(default_factory=list)
    unresolved: list[str] = dataclasses.field(default_factory=list)

    MUST_BE_ZERO = ("lost", "duplicated", "ledger_exchange_mismatches", "told_ledger_mismatches",
                    "position_mismatches", "unresolved")

    @property
    def clean(self) -> bool:
        return not any(getattr(self, name) for name in self.MUST_BE_ZERO)

    def figures(self) -> dict[str, int]:
        counts = {"accepted": self.accepted, "filled": self.filled, "rejected": self.rejected}
        return {**counts, **{name: len(getattr(self, name)) for name in self.MUST_BE_ZERO}}


def reconcile(
    told: Iterable[Told],
    ledger: Iterable[LedgerOrder],
    venue: Iterable[VenueOrder],
    positions: Mapping[tuple[str, str], Decimal],
    *,
    brokers: Iterable[str],
    order_id: Callable[[str, str, str, int], str] = client_order_id,
    legs: int = 1,
) -> Report:
    """Compare the records. `positions` maps (user, pair) to the permission service's net
    quantity (users start flat); `order_id` is how an executor names a signal's order on a broker
    (services.domain.ids.client_order_id), `legs` how many legs a signal may have."""
    report = Report()
    orders = {(o.user_id, o.signal_id): o for o in ledger}
    by_client_id: dict[tuple[str, str], tuple[str, str]] = {}  # (broker, client order id) -> signal
    for user_id, signal_id in orders:
        for broker in brokers:
            for leg in range(legs):
                by_client_id[(broker, order_id(user_id, signal_id, broker, leg))] = (user_id, signal_id)

    _check_told(told, orders, report)
    executed: dict[tuple[str, str], list[VenueOrder]] = defaultdict(list)
    for order in venue:
        key = by_client_id.get((order.broker, order.client_order_id))
        if key is None or key[0] != order.account_id:
            if order.filled_quantity > 0:
                report.lost.append(
                    f"{order.broker} executed {order.client_order_id} for {order.account_id}, which the ledger does not know"
                )
            continue
        if order.filled_quantity > 0:
            executed[key].append(order)
    for key, ledger_order in orders.items():
        _check_exchange(ledger_order, executed.get(key, []), report)
    _check_positions(orders.values(), positions, report)
    return report


def _check_told(told: Iterable[Told], orders: Mapping[tuple[str, str], LedgerOrder], report: Report) -> None:
    for t in told:
        name = f"{t.user_id}/{t.signal_id}"
        order = orders.get((t.user_id, t.signal_id))
        if not t.accepted:
            report.rejected += 1
            if order is not None:  # a refusal is never half-applied
                report.told_ledger_mismatches.append(f"{name}: refused ({t.refused}) but the ledger has it {order.status}")
            continue
        report.accepted += 1
        if order is None:
            report.lost.append(f"{name}: the client was told it was accepted; the ledger has no order")
            continue
        if not t.final:
            report.unresolved.append(f"{name}: no terminal state told (the ledger says {order.status})")
            continue
        if t.final == FILLED:
            report.filled += 1
        else:
            report.rejected += 1
        if t.final != order.status or t.filled_quantity != order.filled_quantity:
            report.told_ledger_mismatches.append(
                f"{name}: told {t.final} {t.filled_quantity}, the ledger has {order.status} {order.filled_quantity}"
            )


def _check_exchange(order: LedgerOrder, executed: list[VenueOrder], report: Report) -> None:
    name = f"{order.user_id}/{order.signal_id}"
    if len(executed) > 1:
        report.duplicated.append(
            f"{name}: executed {len(executed)} times ({', '.join(f'{v.broker}:{v.client_order_id}' for v in executed)})"
        )
    venue_trades = frozenset().union(*(v.trade_ids for v in executed)) if executed else frozenset()
    venue_filled = sum((v.filled_quantity for v in executed), ZERO)
    if venue_trades != order.trade_ids or venue_filled != order.filled_quantity:
        missing, phantom = sorted(venue_trades - order.trade_ids), sorted(order.trade_ids - venue_trades)
        report.ledger_exchange_mismatches.append(
            f"{name}: the exchange filled {venue_filled}, the ledger {order.filled_quantity}"
            + (f"; fills not in the ledger {missing}" if missing else "")
            + (f"; ledger fills the exchange never made {phantom}" if phantom else "")
        )


def _check_positions(
    orders: Iterable[LedgerOrder], positions: Mapping[tuple[str, str], Decimal], report: Report
) -> None:
    expected: dict[tuple[str, str], Decimal] = defaultdict(lambda: ZERO)
    for order in orders:
        sign = 1 if order.side == "buy" else -1
        expected[(order.user_id, order.pair)] += sign * order.filled_quantity
    for key in sorted(set(expected) | set(positions)):
        want, have = expected.get(key, ZERO), positions.get(key, ZERO)
        if want != have:
            report.position_mismatches.append(f"{key[0]} {key[1]}: the ledger's fills make {want}, positions hold {have}")
