"""Pre-trade risk limits and the per-user rate limit. Pure: the store reads the state (inside the
transaction that reserves) and these functions decide.

`check_risk` runs the limits in this order, the first that fails decides:

1. position: the worst-case exposure in the pair, at cost, if every open reservation and this
   order filled; an order that lowers the worst case is always allowed, even above the limit;
2. open positions: pairs with a position or an open reservation, when this order adds a pair;
3. daily notional: traded today (UTC) + every open reservation's remainder + this order;
4. daily loss: today's realized pnl net of fees has reached the limit (no new trades today).

The rate limit is a token bucket per user (`take`): `burst` trades at once, refilled at
`rate` per second; a new user starts full and a denied take costs nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from decimal import ROUND_DOWN, Decimal, localcontext

from services.domain.money import ZERO, fmt
from services.domain.signal import Side
from services.permission.checks import Decision, Denial, deny
from services.permission.permissions import RiskLimits
from services.permission.positions import EXACT, Position

#: Tokens are kept to this quantum (rounded down: never a fraction of a trade too many).
TOKEN_QUANTUM = Decimal("1e-9")


@dataclasses.dataclass(frozen=True)
class OpenReservation:
    """A trade that was allowed and is not over yet: its unfilled rest still counts."""

    signal_id: str
    pair: str
    side: Side
    reserved_usd: Decimal
    filled_usd: Decimal = ZERO

    @property
    def remaining_usd(self) -> Decimal:
        return max(ZERO, self.reserved_usd - self.filled_usd)


@dataclasses.dataclass(frozen=True)
class OpenTotals:
    """A user's open reservations summed by (pair, side): how many, and their unfilled rest.

    All the limits need of the open reservations, in a size that does not grow with their number:
    the store keeps these sums in the transactions that open, fill and close reservations, so a
    reserve reads one row instead of every open reservation (which made a burst of N orders for
    one user cost O(N^2)).
    """

    #: (pair, side) -> (remaining USD, count); only keys with a count above zero.
    sums: Mapping[tuple[str, Side], tuple[Decimal, int]] = dataclasses.field(default_factory=dict)

    @classmethod
    def of(cls, reservations: Iterable[OpenReservation]) -> OpenTotals:
        totals = cls()
        for r in reservations:
            totals = totals.plus(r.pair, r.side, r.remaining_usd)
        return totals

    def plus(self, pair: str, side: Side, remaining_usd: Decimal, count: int = 1) -> OpenTotals:
        """With `count` reservations of `remaining_usd` (in all) more; negative to take them out."""
        sums = dict(self.sums)
        remaining, number = sums.pop((pair, side), (ZERO, 0))
        with _exact():
            remaining += remaining_usd
        number += count
        if number < 0 or (number == 0 and remaining != 0):
            raise ValueError(f"open totals for {pair} {side.value} would be {number} reservations of {remaining} USD")
        if number:
            sums[(pair, side)] = (remaining, number)
        return OpenTotals(sums)

    @property
    def count(self) -> int:
        return sum(number for _, number in self.sums.values())

    def pairs(self) -> set[str]:
        return {pair for pair, _ in self.sums}

    def remaining_usd(self, pair: str | None = None, side: Side | None = None) -> Decimal:
        with _exact():
            return sum(
                (
                    remaining
                    for (p, s), (remaining, _) in self.sums.items()
                    if (pair is None or p == pair) and (side is None or s is side)
                ),
                ZERO,
            )


@dataclasses.dataclass(frozen=True)
class Exposure:
    """One user's risk state, read in the same transaction that reserves.

    The open reservations come either listed (`open_reservations`) or already summed
    (`open_totals`, what reserve reads); the limits look only at the sums, made from the list when
    they are not given.
    """

    user_id: str
    #: By pair; a pair never traded is absent (flat).
    positions: Mapping[str, Position] = dataclasses.field(default_factory=dict)
    open_reservations: tuple[OpenReservation, ...] = ()
    #: Today (UTC): notional filled, realized pnl (gross) and fees.
    traded_today_usd: Decimal = ZERO
    realized_today: Decimal = ZERO
    fees_today: Decimal = ZERO
    open_totals: OpenTotals | None = None

    def __post_init__(self) -> None:
        if self.open_totals is None:
            object.__setattr__(self, "open_totals", OpenTotals.of(self.open_reservations))
        elif self.open_reservations:
            raise ValueError("give the open reservations listed or summed, not both")

    @property
    def _open(self) -> OpenTotals:
        return self.open_totals  # type: ignore[return-value]  # always set by __post_init__

    @property
    def open_count(self) -> int:
        return self._open.count

    def open_pairs(self) -> set[str]:
        return {p for p, pos in self.positions.items() if pos.quantity != 0} | self._open.pairs()

    def open_remaining_usd(self, pair: str | None = None, side: Side | None = None) -> Decimal:
        return self._open.remaining_usd(pair, side)


def check_risk(
    limits: RiskLimits, exposure: Exposure, pair: str, side: Side, size_usd: Decimal
) -> Decision | None:
    """None when the order is within every limit; otherwise the first denial (see the module doc)."""
    user = exposure.user_id
    with _exact():
        if limits.max_position_usd is not None:
            cost = exposure.positions[pair].cost_basis if pair in exposure.positions else ZERO
            buys = exposure.open_remaining_usd(pair, Side.BUY)
            sells = exposure.open_remaining_usd(pair, Side.SELL)
            before = max(abs(cost + buys), abs(cost - sells))
            added_buy = size_usd if side is Side.BUY else ZERO
            added_sell = size_usd if side is Side.SELL else ZERO
            after = max(abs(cost + buys + added_buy), abs(cost - sells - added_sell))
            if after > limits.max_position_usd and after > before:
                return deny(
                    Denial.POSITION_LIMIT,
                    f"{side.value} {fmt(size_usd)} USD of {pair} would take user {user}'s worst-case "
                    f"{pair} position to {fmt(after)} USD (now {fmt(before)} USD), above the max "
                    f"position of {fmt(limits.max_position_usd)} USD",
                )

        if limits.max_open_positions is not None:
            open_pairs = exposure.open_pairs()
            if pair not in open_pairs and len(open_pairs) + 1 > limits.max_open_positions:
                return deny(
                    Denial.OPEN_POSITIONS_LIMIT,
                    f"{pair} would be user {user}'s open position number {len(open_pairs) + 1}, "
                    f"above the max of {limits.max_open_positions} open positions "
                    f"(open: {', '.join(sorted(open_pairs))})",
                )

        if limits.max_daily_notional_usd is not None:
            traded = exposure.traded_today_usd
            reserved = exposure.open_remaining_usd()
            total = traded + reserved + size_usd
            if total > limits.max_daily_notional_usd:
                return deny(
                    Denial.DAILY_NOTIONAL_LIMIT,
                    f"{fmt(size_usd)} USD would take user {user}'s daily notional to {fmt(total)} USD "
                    f"(traded today {fmt(traded)} USD, open reservations {fmt(reserved)} USD), above "
                    f"the max daily notional of {fmt(limits.max_daily_notional_usd)} USD",
                )

        if limits.max_daily_loss_usd is not None:
            net = exposure.realized_today - exposure.fees_today
            if net <= -limits.max_daily_loss_usd:
                return deny(
                    Denial.DAILY_LOSS_LIMIT,
                    f"user {user} has lost {fmt(-net)} USD today (realized {fmt(exposure.realized_today)} "
                    f"USD, fees {fmt(exposure.fees_today)} USD), reaching the max daily loss of "
                    f"{fmt(limits.max_daily_loss_usd)} USD",
                )
    return None


@dataclasses.dataclass(frozen=True)
class Bucket:
    """A user's rate-limit bucket: `tokens` left as of `at` (seconds, on the caller's clock)."""

    tokens: Decimal
    at: float


def take(bucket: Bucket | None, rate: Decimal, burst: int, now: float) -> tuple[bool, Bucket]:
    """Take one token: (allowed, the bucket to keep). None is a new user: a full bucket.

    A denied take consumes nothing. A clock that steps back refills nothing.
    """
    capacity = Decimal(burst)
    if bucket is None:
        tokens, at = capacity, now
    else:
        elapsed = Decimal(repr(max(0.0, now - bucket.at)))
        tokens, at = min(capacity, bucket.tokens + elapsed * rate), max(now, bucket.at)
    tokens = tokens.quantize(TOKEN_QUANTUM, rounding=ROUND_DOWN)
    if tokens >= 1:
        return True, Bucket(tokens - 1, at)
    return False, Bucket(tokens, at)


def rate_limited(user_id: str, limits: RiskLimits) -> Decision:
    return deny(
        Denial.RATE_LIMITED,
        f"user {user_id} is over the rate limit of {fmt(limits.trades_per_second)} trades per "
        f"second (burst {limits.trade_burst})",
    )


def _exact():
    return localcontext(EXACT)
