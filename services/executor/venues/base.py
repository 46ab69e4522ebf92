"""The venue interface: what an executor needs from an exchange.

The simulated exchange (`venues/sim.py`) and every live ccxt venue implement `Venue` and pass the
same contract suite. Venue errors are typed here, at the edge; the executor never inspects
message text.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from services.domain.signal import Side


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


class Liquidity(enum.Enum):
    MAKER = "maker"
    TAKER = "taker"


@dataclasses.dataclass(frozen=True)
class Market:
    pair: str  # "BTC-USD", the mesh's canonical name
    base: str
    quote: str
    tick_size: Decimal
    lot_size: Decimal
    min_quantity: Decimal
    min_notional: Decimal
    #: Fee to withdraw the base asset, in base units (0 when the venue does not say).
    withdrawal_fee: Decimal = Decimal(0)


@dataclasses.dataclass(frozen=True)
class FeeSchedule:
    maker: Decimal
    taker: Decimal


@dataclasses.dataclass(frozen=True)
class BookLevel:
    price: Decimal
    quantity: Decimal


@dataclasses.dataclass(frozen=True)
class OrderBook:
    pair: str
    bids: Sequence[BookLevel]  # best (highest) first
    asks: Sequence[BookLevel]  # best (lowest) first

    @property
    def best_bid(self) -> Decimal | None:
        return self.bids[0].price if self.bids else None

    @property
    def best_ask(self) -> Decimal | None:
        return self.asks[0].price if self.asks else None


@dataclasses.dataclass(frozen=True)
class Account:
    """The user's account on a venue: whose keys sign the request."""

    user_id: str
    account_id: str
    api_key: str = dataclasses.field(default="", repr=False)
    api_secret: str = dataclasses.field(default="", repr=False)
    passphrase: str = dataclasses.field(default="", repr=False)


@dataclasses.dataclass(frozen=True)
class OrderRequest:
    client_order_id: str
    pair: str
    side: Side
    order_type: OrderType
    quantity: Decimal
    limit_price: Decimal | None = None


@dataclasses.dataclass(frozen=True)
class FillReport:
    trade_id: str
    price: Decimal
    quantity: Decimal
    fee: Decimal
    fee_currency: str
    liquidity: Liquidity
    time: datetime | None = None


@dataclasses.dataclass(frozen=True)
class OrderReport:
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
    fills: Sequence[FillReport]


@dataclasses.dataclass(frozen=True)
class Balance:
    asset: str
    free: Decimal
    locked: Decimal


class VenueError(Exception):
    """Base of every venue error. `transport` errors count against the circuit breaker."""

    transport = False


class AuthenticationFailed(VenueError):
    pass


class InsufficientFunds(VenueError):
    pass


class InvalidOrder(VenueError):
    """Rejected by the venue for the order's own content (precision, minimums, unknown pair)."""


class OrderNotFound(VenueError):
    pass


class DuplicateClientOrderId(VenueError):
    """The client order id was already used: the order exists; look it up instead of re-sending."""


class RateLimited(VenueError):
    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ExchangeRejected(VenueError):
    """The venue answered and refused, for a reason none of the classes above names."""


class ExchangeUnavailable(VenueError):
    """Timeout, 5xx, connection failure: the outcome of a send is unknown."""

    transport = True


class Venue(Protocol):
    broker: str

    async def load_markets(self) -> dict[str, Market]: ...

    async def fetch_fees(self) -> FeeSchedule: ...

    async def fetch_order_book(self, pair: str, depth: int = 0) -> OrderBook: ...

    async def create_order(self, account: Account, order: OrderRequest) -> OrderReport: ...

    async def fetch_order(self, account: Account, pair: str, client_order_id: str) -> OrderReport: ...

    async def cancel_order(self, account: Account, pair: str, client_order_id: str) -> OrderReport: ...

    async def fetch_balances(self, account: Account) -> dict[str, Balance]: ...

    async def close(self) -> None: ...
