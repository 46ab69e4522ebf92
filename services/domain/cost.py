"""All-in cost of an order on a venue, and splitting an order across venues. Pure.

All-in cost (the seed's `calculate_total_cost`, improved) = taker fee on the size + expected
slippage from walking the venue's current book for this size (against the mid) + the venue's
withdrawal fee for the bought asset when the signal asks for it. The mesh's orders cross the
spread (market, or limit at the touch), so the taker rate is what they pay.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from decimal import Decimal

from services.domain.scoring import BookSide, PairLiquidity
from services.domain.signal import Side

ZERO = Decimal(0)
CENT_FRACTION = Decimal("1e-8")
# A split never plans to take more than this share of a venue's visible depth: the same margin
# as the seed's "liquidity under 2x the order size" exclusion.
USABLE_DEPTH = Decimal("0.5")


@dataclasses.dataclass(frozen=True)
class CostEstimate:
    fee_usd: Decimal
    slippage_usd: Decimal
    withdrawal_usd: Decimal
    expected_price: Decimal
    slippage_bps: float

    @property
    def total_usd(self) -> Decimal:
        return self.fee_usd + self.slippage_usd + self.withdrawal_usd


def walk(levels: BookSide, size_usd: Decimal) -> tuple[Decimal, Decimal] | None:
    """(base quantity, USD spent) taking `size_usd` from the levels; None if they run out."""
    remaining, quantity, spent = size_usd, ZERO, ZERO
    for price, level_quantity in levels:
        take = min(remaining, price * level_quantity)
        quantity += take / price
        spent += take
        remaining -= take
        if remaining <= 0:
            return quantity, spent
    return None


def estimate_cost(
    side: Side, size_usd: Decimal, book: PairLiquidity, taker_fee: Decimal, include_withdrawal: bool
) -> CostEstimate | None:
    mid = book.mid
    walked = walk(book.levels_for(side), size_usd)
    if mid is None or walked is None:
        return None
    quantity, spent = walked
    price = spent / quantity
    # Paying above the mid on a buy, receiving below it on a sell, both cost money.
    slippage = (price - mid) * quantity if side is Side.BUY else (mid - price) * quantity
    withdrawal = book.withdrawal_fee * mid if include_withdrawal and side is Side.BUY else ZERO
    return CostEstimate(
        fee_usd=(size_usd * taker_fee).quantize(CENT_FRACTION),
        slippage_usd=max(slippage, ZERO).quantize(CENT_FRACTION),
        withdrawal_usd=withdrawal.quantize(CENT_FRACTION),
        expected_price=price.quantize(CENT_FRACTION),
        slippage_bps=float(abs(price - mid) / mid * 10000),
    )


def plan_split(
    side: Side,
    size_usd: Decimal,
    venues: Mapping[str, tuple[PairLiquidity, Decimal]],
    min_leg_usd: Decimal,
) -> dict[str, Decimal] | None:
    """USD per venue that buys (sells) `size_usd` at the best prices after fees, taking at most
    half of each venue's visible depth; None when even that is not enough. Legs under
    `min_leg_usd` are folded into the largest one."""
    offers = []
    for broker, (book, fee) in venues.items():
        for price, quantity in book.levels_for(side):
            effective = price * (1 + fee) if side is Side.BUY else price * (1 - fee)
            offers.append((effective, broker, price * quantity * USABLE_DEPTH))
    # Cheapest first for a buy, richest first for a sell; broker name breaks ties repeatably.
    offers.sort(key=lambda o: (o[0] if side is Side.BUY else -o[0], o[1]))
    remaining = size_usd
    legs: dict[str, Decimal] = {}
    for _, broker, notional in offers:
        take = min(remaining, notional)
        legs[broker] = legs.get(broker, ZERO) + take
        remaining -= take
        if remaining <= 0:
            break
    if remaining > 0:
        return None
    small = [b for b, usd in legs.items() if usd < min_leg_usd]
    if small and len(small) < len(legs):
        largest = max((b for b in legs if b not in small), key=lambda b: (legs[b], b))
        for broker in small:
            legs[largest] += legs.pop(broker)
    rounded = {b: usd.quantize(Decimal("0.01")) for b, usd in legs.items()}
    largest = max(rounded, key=lambda b: (rounded[b], b))
    rounded[largest] += size_usd - sum(rounded.values())  # cents rounding never changes the total
    return rounded
