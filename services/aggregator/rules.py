"""What the ledger checks about an update before it may be written. No I/O, no clock.

An update arrives as a wire message; `parse_update` turns it into a `Change` or refuses it as
INVALID_ARGUMENT naming the field at fault. The ledger then asks `split_fills` which fills are new
and `check_overfill` whether the order can take them, inside its write transaction.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence, Set
from decimal import ROUND_HALF_EVEN, Decimal, localcontext

from nija.common.v1 import common_pb2

from services.domain.money import ZERO, BadDecimal, fmt, parse_decimal, parse_positive
from services.domain.states import Status
from services.runtime.errors import ServiceError, invalid, precondition
from services.runtime.wire import STATUS_FROM_PB

MAX_UPDATE_ID = 256


@dataclasses.dataclass(frozen=True)
class FillEntry:
    """One fill of an update; `index` is its position in the update's `fills`."""

    index: int
    venue_trade_id: str
    price: Decimal
    quantity: Decimal
    fee: Decimal


@dataclasses.dataclass(frozen=True)
class Change:
    """A validated update. Cumulative figures are None when the writer left them out."""

    user_id: str
    signal_id: str
    update_id: str
    status: Status
    broker: str
    fills: tuple[FillEntry, ...]
    order_quantity: Decimal | None
    filled_quantity: Decimal | None
    filled_notional: Decimal | None
    fees_total: Decimal | None
    average_price: Decimal | None


@dataclasses.dataclass(frozen=True)
class Totals:
    """What the recorded fills of one order add up to."""

    quantity: Decimal = ZERO
    notional: Decimal = ZERO
    fees: Decimal = ZERO

    def plus(self, fills: Iterable[FillEntry]) -> Totals:
        quantity, notional, fees = self.quantity, self.notional, self.fees
        # Wide enough that price * quantity of wire decimals (30.18 digits each) is exact.
        with localcontext() as ctx:
            ctx.prec = 100
            for fill in fills:
                quantity += fill.quantity
                notional += fill.price * fill.quantity
                fees += fill.fee
        return Totals(quantity, notional, fees)

    @property
    def average_price(self) -> Decimal | None:
        if not self.quantity:
            return None
        with localcontext() as ctx:
            ctx.prec = 60
            return self.notional / self.quantity


def _bad(field: str, message: str) -> ServiceError:
    return invalid(f"BAD_{field.upper()}", message, field=field)


def _required(value: str, field: str) -> str:
    if not value:
        raise _bad(field, f"{field} is required")
    return value


def _optional_decimal(text: str, field: str, *, signed: bool = False) -> Decimal | None:
    if not text:
        return None
    try:
        value = parse_decimal(text, field)
    except BadDecimal as exc:
        raise _bad(field, str(exc)) from None
    if value < 0 and not signed:
        raise _bad(field, f"{field} must not be negative, got {text.strip()}")
    return value


def _fill(index: int, pb: common_pb2.Fill) -> FillEntry:
    where = f"fills[{index}]"
    if not pb.venue_trade_id:
        raise invalid(
            "BAD_FILL", f"{where}.venue_trade_id is required", field=f"{where}.venue_trade_id"
        )
    try:
        price = parse_positive(pb.price, f"{where}.price")
        quantity = parse_positive(pb.quantity, f"{where}.quantity")
        # Fees may be negative (maker rebates); an absent fee is none.
        fee = parse_decimal(pb.fee, f"{where}.fee") if pb.fee else ZERO
    except BadDecimal as exc:
        raise invalid("BAD_FILL", str(exc), field=where) from None
    return FillEntry(index, pb.venue_trade_id, price, quantity, fee)


def parse_update(pb: common_pb2.ExecutionUpdate) -> Change:
    """Validate a wire update; everything malformed is INVALID_ARGUMENT naming its field."""
    user_id = _required(pb.user_id, "user_id")
    signal_id = _required(pb.signal_id, "signal_id")
    update_id = _required(pb.update_id, "update_id")
    if len(update_id) > MAX_UPDATE_ID:
        raise _bad("update_id", f"update_id must be at most {MAX_UPDATE_ID} characters")
    status = STATUS_FROM_PB.get(pb.status)
    if status is None:
        raise _bad("status", "status must be a known ExecutionStatus other than UNSPECIFIED")
    fills = tuple(_fill(i, f) for i, f in enumerate(pb.fills))
    return Change(
        user_id=user_id,
        signal_id=signal_id,
        update_id=update_id,
        status=status,
        broker=pb.broker,
        fills=fills,
        order_quantity=_optional_decimal(pb.order_quantity, "order_quantity"),
        filled_quantity=_optional_decimal(pb.filled_quantity, "filled_quantity"),
        filled_notional=_optional_decimal(pb.filled_notional, "filled_notional"),
        fees_total=_optional_decimal(pb.fees_total, "fees_total", signed=True),
        average_price=_optional_decimal(pb.average_price, "average_price"),
    )


def split_fills(
    fills: Sequence[FillEntry], recorded: Set[str]
) -> tuple[list[FillEntry], list[FillEntry]]:
    """(new, duplicates): a fill is a duplicate if its trade id is recorded or seen earlier here."""
    seen = set(recorded)
    new: list[FillEntry] = []
    duplicates: list[FillEntry] = []
    for fill in fills:
        if fill.venue_trade_id in seen:
            duplicates.append(fill)
        else:
            seen.add(fill.venue_trade_id)
            new.append(fill)
    return new, duplicates


def check_overfill(totals: Totals, order_quantity: Decimal | None) -> None:
    """Refuse fills that add up to more than the order asked for (when that is known)."""
    if order_quantity is not None and order_quantity > 0 and totals.quantity > order_quantity:
        raise precondition(
            "OVERFILL",
            f"fills add up to {totals.quantity}, more than the order quantity {order_quantity}",
            filled_quantity=fmt(totals.quantity),
            order_quantity=fmt(order_quantity),
        )


# Derived figures must stay readable by `parse_decimal` everywhere (at most 18 fraction digits).
_WIRE_STEP = Decimal("1e-18")


def wire_decimal(value: Decimal) -> str:
    with localcontext() as ctx:
        ctx.prec = 100
        return fmt(value.quantize(_WIRE_STEP, rounding=ROUND_HALF_EVEN))
