"""The simulated exchanges' engine: reference prices, books, accounts, orders and fills. Pure.

No grpc, no asyncio, no clock of its own: a wall clock (for timestamps) and a `random.Random`
(for the price walk and book sizes) are injected, so one seed and one sequence of `tick(now)`
calls reproduce a session exactly.

Matching model, per broker and pair:
- The book is synthetic liquidity rebuilt around the shared reference price on every tick; what a
  taker consumes stays consumed until the next tick.
- Market orders walk the book level by level (one TAKER fill per level); when depth runs out the
  rest is cancelled.
- Limit orders fill their crossing part at once as TAKER at book prices no worse than the limit;
  the rest rests. Resting orders are not shown in the book; on each tick a resting order fills as
  MAKER, at its limit price, as far as the new opposite book crosses it (consuming that liquidity).

Every check runs before anything changes: a refused command leaves no trace (beyond the account
it may have opened, which is what "created on first use" means).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from decimal import ROUND_CEILING, Context, Decimal, localcontext
from typing import Any, TypeVar

from services.domain.money import ZERO, floor_to_step
from services.domain.signal import Side
from services.simexchange.listings import (
    ASSETS,
    BROKER_PROFILES,
    QUOTE,
    QUOTE_FUNDING,
    BrokerProfile,
    FeeSchedule,
    MarketSpec,
)

BPS = Decimal(10_000)
# Settlement must be exact: the default 28 digits could round a large account's balance once
# sub-satoshi lots meet six-decimal ticks. 60 digits never rounds anything this engine computes.
_EXACT = Context(prec=60)
# Reference prices keep 8 decimals; more would only grow digits on every tick.
_REFERENCE_STEP = Decimal("0.00000001")

F = TypeVar("F", bound=Callable[..., Any])


def _exact(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with localcontext(_EXACT):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


# --- the engine's vocabulary ------------------------------------------------------------------


class OrderType(enum.Enum):
    MARKET = "market"
    LIMIT = "limit"


class OrderState(enum.Enum):
    OPEN = "open"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"

    @property
    def done(self) -> bool:
        return self in (OrderState.FILLED, OrderState.CANCELLED)


_TRANSITIONS: dict[OrderState, frozenset[OrderState]] = {
    OrderState.OPEN: frozenset({OrderState.PARTIALLY_FILLED, OrderState.FILLED, OrderState.CANCELLED}),
    OrderState.PARTIALLY_FILLED: frozenset(
        {OrderState.PARTIALLY_FILLED, OrderState.FILLED, OrderState.CANCELLED}
    ),
    OrderState.FILLED: frozenset(),
    OrderState.CANCELLED: frozenset(),
}


class Liquidity(enum.Enum):
    MAKER = "maker"
    TAKER = "taker"


@dataclasses.dataclass(frozen=True)
class PlaceOrder:
    """The command: what a client asks one broker to do for one of its accounts."""

    client_order_id: str
    pair: str
    side: Side
    order_type: OrderType
    quantity: Decimal
    limit_price: Decimal | None = None


@dataclasses.dataclass(frozen=True)
class Fill:
    trade_id: str
    price: Decimal
    quantity: Decimal
    fee: Decimal
    fee_currency: str
    liquidity: Liquidity
    time: datetime


@dataclasses.dataclass(frozen=True)
class OrderView:
    """A snapshot of an order; the engine's own record keeps changing after it is taken."""

    venue_order_id: str
    client_order_id: str
    pair: str
    side: Side
    order_type: OrderType
    quantity: Decimal
    limit_price: Decimal | None
    state: OrderState
    filled_quantity: Decimal
    filled_notional: Decimal
    fees: Decimal
    fills: tuple[Fill, ...]
    created_at: datetime
    account_id: str


@dataclasses.dataclass(frozen=True)
class Level:
    price: Decimal
    quantity: Decimal


@dataclasses.dataclass(frozen=True)
class BookView:
    pair: str
    bids: tuple[Level, ...]  # best (highest) first
    asks: tuple[Level, ...]  # best (lowest) first
    time: datetime


@dataclasses.dataclass(frozen=True)
class BalanceView:
    asset: str
    free: Decimal
    locked: Decimal


# --- errors -----------------------------------------------------------------------------------


class SimExchangeError(Exception):
    pass


class UnknownBroker(SimExchangeError):
    pass


class UnknownPair(SimExchangeError):
    pass


class InvalidOrder(SimExchangeError):
    """The order's own content breaks a market rule; `field` names the offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class DuplicateClientOrderId(SimExchangeError):
    """The client order id is already used on this account: the order exists."""


class OrderNotFound(SimExchangeError):
    pass


class InsufficientFunds(SimExchangeError):
    def __init__(self, asset: str, needed: Decimal, available: Decimal) -> None:
        super().__init__(f"insufficient {asset}: needs {needed}, available {available}")
        self.asset = asset
        self.needed = needed
        self.available = available


class IllegalOrderTransition(SimExchangeError):
    """A bug in the engine, never a client error."""


# --- internal state ---------------------------------------------------------------------------


class _Level:
    __slots__ = ("price", "quantity")

    def __init__(self, price: Decimal, quantity: Decimal) -> None:
        self.price = price
        self.quantity = quantity


@dataclasses.dataclass
class _Book:
    bids: list[_Level]
    asks: list[_Level]
    time: datetime

    def opposite(self, side: Side) -> list[_Level]:
        return self.asks if side is Side.BUY else self.bids


@dataclasses.dataclass
class _Order:
    venue_order_id: str
    client_order_id: str
    broker: str
    account_id: str
    market: MarketSpec
    side: Side
    order_type: OrderType
    quantity: Decimal
    limit_price: Decimal | None
    created_at: datetime
    seq: int
    state: OrderState = OrderState.OPEN
    fills: list[Fill] = dataclasses.field(default_factory=list)
    #: Funds still locked for this order: quote for a buy, base for a sell.
    reserved: Decimal = ZERO

    @property
    def filled_quantity(self) -> Decimal:
        return sum((f.quantity for f in self.fills), ZERO)

    @property
    def remaining(self) -> Decimal:
        return self.quantity - self.filled_quantity

    def move(self, new: OrderState) -> None:
        if new not in _TRANSITIONS[self.state]:
            raise IllegalOrderTransition(f"order {self.venue_order_id}: {self.state.value} -> {new.value}")
        self.state = new

    def view(self) -> OrderView:
        return OrderView(
            venue_order_id=self.venue_order_id,
            client_order_id=self.client_order_id,
            pair=self.market.pair,
            side=self.side,
            order_type=self.order_type,
            quantity=self.quantity,
            limit_price=self.limit_price,
            state=self.state,
            filled_quantity=self.filled_quantity,
            filled_notional=sum((f.price * f.quantity for f in self.fills), ZERO),
            fees=sum((f.fee for f in self.fills), ZERO),
            fills=tuple(self.fills),
            created_at=self.created_at,
            account_id=self.account_id,
        )


class _Account:
    def __init__(self, funding: dict[str, Decimal]) -> None:
        self.free = dict(funding)
        self.locked: dict[str, Decimal] = {asset: ZERO for asset in funding}
        self.by_client_id: dict[str, _Order] = {}
        self.by_venue_id: dict[str, _Order] = {}

    def available(self, asset: str) -> Decimal:
        return self.free.get(asset, ZERO)

    def lock(self, asset: str, amount: Decimal) -> None:
        self.free[asset] = self.available(asset) - amount
        self.locked[asset] = self.locked.get(asset, ZERO) + amount

    def unlock(self, asset: str, amount: Decimal) -> None:
        self.locked[asset] -= amount
        self.free[asset] += amount

    def credit(self, asset: str, amount: Decimal) -> None:
        self.free[asset] = self.available(asset) + amount
        self.locked.setdefault(asset, ZERO)


def _ceil_to_step(value: Decimal, step: Decimal) -> Decimal:
    return (value / step).to_integral_value(rounding=ROUND_CEILING) * step


def _crosses(side: Side, book_price: Decimal, limit: Decimal | None) -> bool:
    """Whether a taker on `side` with `limit` may trade at `book_price`."""
    if limit is None:
        return True
    return book_price <= limit if side is Side.BUY else book_price >= limit


def _takeable(
    levels: Sequence[_Level], side: Side, quantity: Decimal, limit: Decimal | None
) -> list[tuple[Decimal, Decimal]]:
    """(price, quantity) a taker would get from `levels`, best first; changes nothing."""
    takes: list[tuple[Decimal, Decimal]] = []
    left = quantity
    for level in levels:
        if left <= 0 or not _crosses(side, level.price, limit):
            break
        take = min(left, level.quantity)
        takes.append((level.price, take))
        left -= take
    return takes


def _consume(levels: list[_Level], takes: Iterable[tuple[Decimal, Decimal]]) -> None:
    # `takes` came from `_takeable` on these same levels, so they run from the front in order.
    for _, quantity in takes:
        levels[0].quantity -= quantity
        if levels[0].quantity == 0:
            levels.pop(0)


# --- the engine -------------------------------------------------------------------------------


def check_fee_schedule(fees: FeeSchedule) -> str | None:
    """Why `fees` cannot be a broker's schedule, or None: fractions in [0, 1), maker <= taker."""
    if not (0 <= fees.maker < 1 and 0 <= fees.taker < 1):
        return f"fees must be fractions in [0, 1), got maker {fees.maker} taker {fees.taker}"
    if fees.maker > fees.taker:
        return f"maker fee {fees.maker} is above taker fee {fees.taker}"
    return None


def check_depth_multiplier(multiplier: Decimal) -> str | None:
    """Why `multiplier` cannot scale a broker's book depth, or None."""
    if not multiplier.is_finite() or multiplier <= 0:
        return f"depth multiplier must be > 0, got {multiplier}"
    return None


def _with_overrides(
    profiles: Mapping[str, BrokerProfile],
    fee_overrides: Mapping[str, FeeSchedule],
    depth_overrides: Mapping[str, Decimal],
) -> dict[str, BrokerProfile]:
    """The listed profiles with their fee schedules replaced and depths scaled as asked."""
    for broker in (*fee_overrides, *depth_overrides):
        if broker not in profiles:
            raise UnknownBroker(f"override for unknown broker {broker!r}; known: {', '.join(profiles)}")
    for broker, fees in fee_overrides.items():
        if problem := check_fee_schedule(fees):
            raise ValueError(f"{broker}: {problem}")
    for broker, multiplier in depth_overrides.items():
        if problem := check_depth_multiplier(multiplier):
            raise ValueError(f"{broker}: {problem}")
    out = {}
    for name, profile in profiles.items():
        if name in fee_overrides:
            profile = dataclasses.replace(profile, fees=fee_overrides[name])
        if name in depth_overrides:
            profile = dataclasses.replace(profile, depth_factor=profile.depth_factor * depth_overrides[name])
        out[name] = profile
    return out


class SimExchange:
    """The four simulated brokers around one shared set of reference prices."""

    def __init__(
        self,
        *,
        rng: random.Random,
        clock: Callable[[], datetime],
        volatility_bps: float = 2.0,
        session: str = "",
        fee_overrides: Mapping[str, FeeSchedule] | None = None,
        depth_overrides: Mapping[str, Decimal] | None = None,
    ) -> None:
        """`volatility_bps`: standard deviation of one tick's reference move, in basis points.
        `session` prefixes every order and trade id, so a restarted exchange never reuses one.
        `fee_overrides` replaces a broker's listed fee schedule; `depth_overrides` multiplies how
        much its books hold (scenarios that need near-equal fees or one thin venue)."""
        if volatility_bps < 0:
            raise ValueError(f"volatility_bps must be >= 0, got {volatility_bps}")
        self._rng = rng
        self._clock = clock
        self._volatility_bps = volatility_bps
        self._prefix = f"{session}-" if session else ""
        self._profiles = _with_overrides(BROKER_PROFILES, fee_overrides or {}, depth_overrides or {})
        self._reference = {
            symbol: asset.reference_price
            for symbol, asset in ASSETS.items()
            if any(f"{symbol}-{QUOTE}" in p.markets for p in self._profiles.values())
        }
        self._accounts: dict[tuple[str, str], _Account] = {}
        self._resting: dict[tuple[str, str], list[_Order]] = {}
        self._books: dict[tuple[str, str], _Book] = {}
        self._order_seq = 0
        self._trade_seq = 0
        with localcontext(_EXACT):
            self._rebuild_books(clock())

    # -- queries

    @property
    def brokers(self) -> tuple[str, ...]:
        return tuple(self._profiles)

    def markets(self, broker: str) -> tuple[MarketSpec, ...]:
        return tuple(sorted(self._profile(broker).markets.values(), key=lambda m: m.pair))

    def fees(self, broker: str) -> FeeSchedule:
        return self._profile(broker).fees

    def reference_price(self, base: str) -> Decimal:
        try:
            return self._reference[base]
        except KeyError:
            raise UnknownPair(f"no reference price for {base!r}") from None

    def book(self, broker: str, pair: str, depth: int = 0) -> BookView:
        """The broker's book, best first on both sides; `depth` 0 means every level."""
        self._market(self._profile(broker), pair)
        book = self._books[(broker, pair)]
        cut = depth if depth > 0 else None
        return BookView(
            pair=pair,
            bids=tuple(Level(lv.price, lv.quantity) for lv in book.bids[:cut]),
            asks=tuple(Level(lv.price, lv.quantity) for lv in book.asks[:cut]),
            time=book.time,
        )

    def balances(self, broker: str, account_id: str) -> tuple[BalanceView, ...]:
        account = self._account(broker, account_id)
        return tuple(
            BalanceView(asset, account.free[asset], account.locked.get(asset, ZERO))
            for asset in sorted(account.free)
        )

    def order_count(self, broker: str) -> int:
        """Orders ever placed on `broker`, over every account (what a reconciliation counts)."""
        return sum(len(acct.by_venue_id) for (b, _), acct in self._accounts.items() if b == broker)

    def orders(
        self, broker: str, account_id: str = "", after: int = 0, limit: int = 500
    ) -> tuple[list[OrderView], int]:
        """Up to `limit` of the broker's orders placed after position `after`, oldest first (one
        account's, or every account's when `account_id` is empty), and the position to ask after
        next: 0 when there are no more."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self._profile(broker)
        found = sorted(
            (
                order
                for (b, account), acct in self._accounts.items()
                if b == broker and (not account_id or account == account_id)
                for order in acct.by_venue_id.values()
                if order.seq > after
            ),
            key=lambda order: order.seq,
        )
        page = found[:limit]
        return [order.view() for order in page], page[-1].seq if len(found) > limit else 0

    def get_order(
        self, broker: str, account_id: str, *, client_order_id: str = "", venue_order_id: str = ""
    ) -> OrderView:
        return self._find(broker, account_id, client_order_id, venue_order_id).view()

    # -- commands

    @_exact
    def place_order(self, broker: str, account_id: str, command: PlaceOrder) -> OrderView:
        profile = self._profile(broker)
        market = self._market(profile, command.pair)
        self._check_order(profile, market, command)
        existing = self._accounts.get((broker, account_id))
        if existing is not None and command.client_order_id in existing.by_client_id:
            raise DuplicateClientOrderId(
                f"client_order_id {command.client_order_id!r} is already used on this account"
            )

        book = self._books[(broker, market.pair)]
        takes = _takeable(book.opposite(command.side), command.side, command.quantity, command.limit_price)
        # A limit order locks what its whole quantity could cost; a market order what its walk costs.
        if command.order_type is OrderType.LIMIT:
            reserve = self._reserve_for(profile, command.side, command.quantity, command.limit_price)
        else:
            reserve = sum((self._reserve_for(profile, command.side, q, p) for p, q in takes), ZERO)
        account = self._account(broker, account_id)
        asset = market.quote if command.side is Side.BUY else market.base
        if account.available(asset) < reserve:
            raise InsufficientFunds(asset, reserve, account.available(asset))

        # Nothing below can fail for the client's sake: the order is accepted.
        now = self._clock()
        self._order_seq += 1
        order = _Order(
            venue_order_id=f"{self._prefix}O{self._order_seq}",
            client_order_id=command.client_order_id,
            broker=broker,
            account_id=account_id,
            market=market,
            side=command.side,
            order_type=command.order_type,
            quantity=command.quantity,
            limit_price=command.limit_price,
            created_at=now,
            seq=self._order_seq,
        )
        account.by_client_id[order.client_order_id] = order
        account.by_venue_id[order.venue_order_id] = order
        account.lock(asset, reserve)
        order.reserved = reserve

        _consume(book.opposite(command.side), takes)
        for price, quantity in takes:
            self._fill(profile, account, order, price, quantity, Liquidity.TAKER, now)
        if not order.state.done:
            if order.order_type is OrderType.MARKET:
                # Depth ran out: the rest of a market order never rests.
                self._finish(account, order, OrderState.CANCELLED)
            else:
                self._resting.setdefault((broker, market.pair), []).append(order)
        return order.view()

    @_exact
    def cancel_order(
        self, broker: str, account_id: str, *, client_order_id: str = "", venue_order_id: str = ""
    ) -> OrderView:
        """Cancel the resting remainder. An order already done is returned as it is."""
        order = self._find(broker, account_id, client_order_id, venue_order_id)
        if not order.state.done:
            self._resting[(broker, order.market.pair)].remove(order)
            self._finish(self._accounts[(broker, account_id)], order, OrderState.CANCELLED)
        return order.view()

    @_exact
    def set_reference_price(self, base: str, price: Decimal) -> None:
        """Pin a reference price (scenarios and tests); the books follow on the next tick."""
        if base not in self._reference:
            raise UnknownPair(f"no reference price for {base!r}")
        if price <= 0:
            raise ValueError(f"reference price must be > 0, got {price}")
        self._reference[base] = price

    @_exact
    def tick(self, now: datetime) -> None:
        """Move every reference price one step, rebuild every book, fill resting orders."""
        for base in self._reference:
            self._reference[base] = self._step(self._reference[base])
        self._rebuild_books(now)
        for (broker, pair), orders in self._resting.items():
            if orders:
                self._match_resting(broker, pair, orders, now)

    # -- internals

    def _profile(self, broker: str) -> BrokerProfile:
        try:
            return self._profiles[broker]
        except KeyError:
            raise UnknownBroker(f"unknown broker {broker!r}; known: {', '.join(self._profiles)}") from None

    @staticmethod
    def _market(profile: BrokerProfile, pair: str) -> MarketSpec:
        try:
            return profile.markets[pair]
        except KeyError:
            raise UnknownPair(f"{pair!r} is not listed on {profile.name}") from None

    def _account(self, broker: str, account_id: str) -> _Account:
        profile = self._profile(broker)
        key = (broker, account_id)
        if key not in self._accounts:
            funding = {QUOTE: QUOTE_FUNDING}
            for market in profile.markets.values():
                funding[market.base] = ASSETS[market.base].funding
            self._accounts[key] = _Account(funding)
        return self._accounts[key]

    def _find(self, broker: str, account_id: str, client_order_id: str, venue_order_id: str) -> _Order:
        self._profile(broker)
        if not client_order_id and not venue_order_id:
            raise InvalidOrder("client_order_id", "client_order_id or venue_order_id is required")
        account = self._accounts.get((broker, account_id))
        by_client = account.by_client_id.get(client_order_id) if account and client_order_id else None
        by_venue = account.by_venue_id.get(venue_order_id) if account and venue_order_id else None
        order = by_client or by_venue
        # Both ids given must name the same order.
        if order is None or (client_order_id and venue_order_id and by_client is not by_venue):
            wanted = client_order_id or venue_order_id
            raise OrderNotFound(f"no order {wanted!r} on this account")
        return order

    def _mid(self, profile: BrokerProfile, base: str) -> Decimal:
        return self._reference[base] * (1 + profile.offset_bps / BPS)

    def _check_order(self, profile: BrokerProfile, market: MarketSpec, command: PlaceOrder) -> None:
        qty, limit = command.quantity, command.limit_price
        if qty <= 0:
            raise InvalidOrder("quantity", f"quantity must be > 0, got {qty}")
        if qty % market.lot_size != 0:
            raise InvalidOrder(
                "quantity", f"quantity {qty} is not a multiple of the lot size {market.lot_size}"
            )
        if qty < market.min_quantity:
            raise InvalidOrder("quantity", f"quantity {qty} is under the minimum {market.min_quantity}")
        if command.order_type is OrderType.LIMIT:
            if limit is None:
                raise InvalidOrder("limit_price", "limit_price is required for a limit order")
            if limit <= 0:
                raise InvalidOrder("limit_price", f"limit_price must be > 0, got {limit}")
            if limit % market.tick_size != 0:
                raise InvalidOrder(
                    "limit_price",
                    f"limit_price {limit} is not a multiple of the tick size {market.tick_size}",
                )
        elif limit is not None:
            raise InvalidOrder("limit_price", "a market order takes no limit_price")
        # A market order's notional is judged at the broker's mid, as the real venues estimate it.
        notional = qty * (limit if limit is not None else self._mid(profile, market.base))
        if notional < market.min_notional:
            raise InvalidOrder(
                "quantity",
                f"notional {notional:.2f} {market.quote} is under the minimum {market.min_notional}",
            )

    @staticmethod
    def _reserve_for(profile: BrokerProfile, side: Side, quantity: Decimal, price: Decimal | None) -> Decimal:
        """What filling `quantity` at `price` may cost at most: base for a sell, quote and the
        worst (taker) fee for a buy."""
        if side is Side.SELL:
            return quantity
        assert price is not None
        return quantity * price * (1 + profile.fees.taker)

    def _fill(
        self,
        profile: BrokerProfile,
        account: _Account,
        order: _Order,
        price: Decimal,
        quantity: Decimal,
        liquidity: Liquidity,
        now: datetime,
    ) -> None:
        rate = profile.fees.maker if liquidity is Liquidity.MAKER else profile.fees.taker
        notional = price * quantity
        fee = notional * rate
        market = order.market
        # Release exactly what was reserved for this quantity, then pay from it.
        release = self._reserve_for(profile, order.side, quantity, order.limit_price or price)
        if order.side is Side.BUY:
            account.unlock(market.quote, release)
            account.credit(market.quote, -(notional + fee))
            account.credit(market.base, quantity)
        else:
            account.unlock(market.base, release)
            account.credit(market.base, -quantity)
            account.credit(market.quote, notional - fee)
        order.reserved -= release
        self._trade_seq += 1
        order.fills.append(
            Fill(f"{self._prefix}T{self._trade_seq}", price, quantity, fee, market.quote, liquidity, now)
        )
        if order.remaining == 0:
            self._finish(account, order, OrderState.FILLED)
        else:
            order.move(OrderState.PARTIALLY_FILLED)

    def _finish(self, account: _Account, order: _Order, state: OrderState) -> None:
        asset = order.market.quote if order.side is Side.BUY else order.market.base
        if order.reserved:
            account.unlock(asset, order.reserved)
            order.reserved = ZERO
        order.move(state)

    def _match_resting(self, broker: str, pair: str, orders: list[_Order], now: datetime) -> None:
        profile = self._profiles[broker]
        book = self._books[(broker, pair)]
        # Price priority, then time.
        ranked = sorted(
            orders,
            key=lambda o: (o.side.value, -o.limit_price if o.side is Side.BUY else o.limit_price, o.seq),  # type: ignore[operator]
        )
        for order in ranked:
            levels = book.opposite(order.side)
            takes = _takeable(levels, order.side, order.remaining, order.limit_price)
            if not takes:
                continue
            _consume(levels, takes)
            quantity = sum((q for _, q in takes), ZERO)
            assert order.limit_price is not None
            account = self._accounts[(broker, order.account_id)]
            self._fill(profile, account, order, order.limit_price, quantity, Liquidity.MAKER, now)
            if order.state.done:
                orders.remove(order)

    def _step(self, price: Decimal) -> Decimal:
        if self._volatility_bps == 0:
            return price
        # Draws are floats (not money); the move is taken in whole hundredths of a basis point.
        move = Decimal(round(self._rng.gauss(0.0, self._volatility_bps) * 100)) / 1_000_000
        return (price * (1 + move)).quantize(_REFERENCE_STEP)

    def _rebuild_books(self, now: datetime) -> None:
        for name, profile in self._profiles.items():
            for pair, market in profile.markets.items():
                self._books[(name, pair)] = self._build_book(profile, market, now)

    def _build_book(self, profile: BrokerProfile, market: MarketSpec, now: datetime) -> _Book:
        asset = ASSETS[market.base]
        mid = self._mid(profile, market.base)
        half_spread = profile.spread_bps * asset.spread_factor / 2 / BPS
        step = profile.level_step_bps * asset.spread_factor / BPS
        # Deeper levels hold more, as on real books.
        weights = [1 + Decimal(i) / 2 for i in range(profile.levels)]
        per_weight = asset.depth_usd * profile.depth_factor / sum(weights)
        bids: list[_Level] = []
        asks: list[_Level] = []
        for i, weight in enumerate(weights):
            ask = _ceil_to_step(mid * (1 + half_spread + i * step), market.tick_size)
            bid = floor_to_step(mid * (1 - half_spread - i * step), market.tick_size)
            # A coarse tick must not fold two levels into one price.
            if asks and ask <= asks[-1].price:
                ask = asks[-1].price + market.tick_size
            if bids and bid >= bids[-1].price:
                bid = bids[-1].price - market.tick_size
            asks.append(_Level(ask, self._level_size(per_weight * weight, ask, market)))
            if bid > 0:
                bids.append(_Level(bid, self._level_size(per_weight * weight, bid, market)))
        return _Book(bids=bids, asks=asks, time=now)

    def _level_size(self, usd: Decimal, price: Decimal, market: MarketSpec) -> Decimal:
        jitter = Decimal(self._rng.randint(75, 125)) / 100
        return max(floor_to_step(usd * jitter / price, market.lot_size), market.lot_size)
