"""Positions from fills: the seed's position manager, in exact decimal arithmetic. Pure.

A `Position` in one pair holds a signed `quantity` (+ long, - short) and a signed `cost_basis`
(what the open quantity cost, signed the same way), the `realized_pnl` of everything closed
(gross of fees) and the `fees` paid; net pnl is `realized_pnl - fees`.

`apply_fill` is the only way a position changes:

- A fill in the position's direction (or from flat) adds: `quantity += q`, `cost_basis += p*q`
  (signed), exactly.
- A fill against it reduces: it closes `q_close = min(q, |quantity|)`, taking from the cost basis
  `removed = cost_basis * q_close / |quantity|`, computed with 50 significant digits and then
  quantized to 1e-12 with ROUND_HALF_EVEN, except that closing the whole position removes exactly
  `cost_basis`. The realized pnl of the close is `p*q_close - |removed|` for a long and
  `|removed| - p*q_close` for a short, exactly; `cost_basis -= removed`. What is left of the fill
  (`q - q_close`) opens the other side at `p`.

That one rounding (of `removed`, to 12 places, half-even) is the only rounding anywhere: it is what
a ledger computed by hand must apply to match to the last digit. Because the rest is exact,
`realized_pnl - cost_basis` always equals the cash the fills moved (sell proceeds minus buy costs)
exactly, whatever the rounding did to the split between the two.
"""

from __future__ import annotations

import dataclasses
from decimal import ROUND_HALF_EVEN, Context, Decimal, Inexact, localcontext

from services.domain.money import ZERO
from services.domain.signal import Side

#: The quantum of the cost basis taken off by a partial close, and of average prices.
QUANTUM = Decimal("1e-12")
#: Exact arithmetic: wide enough for any product and sum of wire decimals (30 + 18 digits each),
#: and an inexact result raises instead of rounding silently.
EXACT = Context(prec=120, traps=[Inexact])
#: The precision of the partial-close division, before it is quantized.
DIVISION = Context(prec=50, rounding=ROUND_HALF_EVEN)


class BadFill(ValueError):
    """A fill that cannot be applied (non-positive price or quantity, unknown side, ...)."""


@dataclasses.dataclass(frozen=True)
class Position:
    pair: str
    #: Signed: + long, - short.
    quantity: Decimal = ZERO
    #: What the open quantity cost, signed like the quantity.
    cost_basis: Decimal = ZERO
    #: Of everything closed, gross of fees.
    realized_pnl: Decimal = ZERO
    fees: Decimal = ZERO

    @property
    def average_entry_price(self) -> Decimal:
        """|cost_basis / quantity| to 12 places (half-even); 0 when flat."""
        if self.quantity == 0:
            return ZERO
        with localcontext(DIVISION):
            return abs(self.cost_basis / self.quantity).quantize(QUANTUM)

    @property
    def net_pnl(self) -> Decimal:
        with localcontext(EXACT):
            return self.realized_pnl - self.fees


def apply_fill(
    position: Position, side: Side, price: Decimal, quantity: Decimal, fee: Decimal
) -> tuple[Position, Decimal]:
    """The position after one fill, and the pnl the fill realized (gross of its fee)."""
    check_fill(side, price, quantity, fee)
    with localcontext(EXACT):
        held = position.quantity
        signed = quantity if side is Side.BUY else -quantity
        fees = position.fees + fee
        if held == 0 or (held > 0) == (signed > 0):
            opened = dataclasses.replace(
                position, quantity=held + signed, cost_basis=position.cost_basis + signed * price, fees=fees
            )
            return opened, ZERO
        q_close = min(quantity, abs(held))
        if q_close == abs(held):
            removed = position.cost_basis
        else:
            with localcontext(DIVISION):
                removed = (position.cost_basis * q_close / abs(held)).quantize(QUANTUM)
        proceeds = price * q_close
        realized = proceeds - abs(removed) if held > 0 else abs(removed) - proceeds
        remainder = quantity - q_close
        if remainder:
            # Crossed through zero: the rest opens the other side at this price.
            new_quantity = remainder if side is Side.BUY else -remainder
            new_cost = new_quantity * price
        else:
            new_quantity = held + signed
            new_cost = position.cost_basis - removed
        after = Position(
            pair=position.pair,
            quantity=new_quantity,
            cost_basis=new_cost,
            realized_pnl=position.realized_pnl + realized,
            fees=fees,
        )
        return after, realized


def check_fill(side: Side, price: Decimal, quantity: Decimal, fee: Decimal) -> None:
    """BadFill unless a fill of `side` at `price` for `quantity` paying `fee` can be applied."""
    if not isinstance(side, Side):
        raise BadFill(f"side must be a Side, got {side!r}")
    for name, value in (("price", price), ("quantity", quantity)):
        if not isinstance(value, Decimal) or not value.is_finite() or value <= 0:
            raise BadFill(f"{name} must be a positive finite Decimal, got {value!r}")
    # A negative fee is a rebate.
    if not isinstance(fee, Decimal) or not fee.is_finite():
        raise BadFill(f"fee must be a finite Decimal, got {fee!r}")
