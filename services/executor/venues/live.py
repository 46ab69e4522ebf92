"""Live venues: the real exchanges through ccxt (async_support), one adapter per exchange.

`CcxtVenue` is what every exchange shares; an `Adapter` (venues/adapters/<broker>.py) is what
differs: how the exchange's markets, books, orders, fills and balances look, which raw parameter
carries the idempotency key, how an order is found by that key. The division of labour:

- ccxt signs, sends and parses the transport; its rate limiter is off (the executor's own limiter,
  which knows each exchange's published limits per account and per IP, is in charge).
- Money never passes through a float: adapters read prices, quantities and fees from the
  exchange's own JSON strings (`info`), never from ccxt's float fields.
- Errors are typed here, at the edge, by ccxt's exception classes (which ccxt derives from the
  exchange's error codes and HTTP statuses), never by matching message text.
- One ccxt instance per (user, broker), so one user's nonces and signatures never interleave with
  another's and a bad key fails that user alone; one keyless instance reads public data.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import ssl
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

import aiohttp
import ccxt.async_support as ccxt
import certifi

from services.domain.money import ceil_to_step, floor_to_step
from services.domain.signal import Side
from services.executor.venues.base import (
    Account,
    AuthenticationFailed,
    Balance,
    DuplicateClientOrderId,
    ExchangeRejected,
    ExchangeUnavailable,
    FeeSchedule,
    InsufficientFunds,
    InvalidOrder,
    Market,
    OrderBook,
    OrderNotFound,
    OrderReport,
    OrderRequest,
    OrderType,
    RateLimited,
    VenueError,
)

log = logging.getLogger(__name__)


class Adapter(Protocol):
    """What one exchange does differently behind ccxt. Adapters hold no state of their own."""

    broker: str
    ccxt_id: str
    #: True when the exchange answers market reads only to a signed request (CcxtVenue's
    #: `market_account` is then required). Adapters may also define
    #: `venue_client_order_id(mesh_id) -> str` when the exchange needs the id in another form.
    signed_market_reads: bool = False
    #: What each operation spends beyond its own request, against the budgets of the executor's
    #: rate-limit profile for this exchange: {operation: {budget: cost}} (services/domain/rate_limits).
    follow_up_costs: Mapping[str, Mapping[str, float]] = {}

    def options(self) -> dict[str, Any]:
        """Extra ccxt constructor settings (e.g. spot markets only)."""

    def redirect(self, exchange: ccxt.Exchange, base_url: str) -> None:
        """Point every API URL ccxt uses at `base_url` (an emulator or a sandbox), keeping paths."""

    def markets(self, exchange: ccxt.Exchange) -> dict[str, Market]:
        """The USD-quoted spot markets of a loaded exchange, by the mesh's pair name ("BTC-USD")."""

    async def fees(self, exchange: ccxt.Exchange) -> FeeSchedule: ...

    async def order_book(self, exchange: ccxt.Exchange, pair: str, depth: int) -> OrderBook: ...

    async def create_order(self, exchange: ccxt.Exchange, order: OrderRequest) -> OrderReport:
        """Send with the exchange's own idempotency key carrying `order.client_order_id`."""

    async def fetch_order(self, exchange: ccxt.Exchange, pair: str, client_order_id: str) -> OrderReport: ...

    async def cancel_order(self, exchange: ccxt.Exchange, pair: str, client_order_id: str) -> OrderReport: ...

    async def balances(self, exchange: ccxt.Exchange) -> dict[str, Balance]: ...


def adapter(broker: str) -> Adapter:
    from services.executor.venues.adapters import ADAPTERS

    try:
        return ADAPTERS[broker]
    except KeyError:
        raise ValueError(f"no live adapter for {broker!r}; known: {', '.join(ADAPTERS)}") from None


def dec(value: Any, field: str = "value") -> Decimal:
    """An exchange's number, exactly: from its JSON string (or int). A float is refused."""
    if isinstance(value, float) or isinstance(value, bool):
        raise TypeError(f"{field}: {value!r} is a float; read the exchange's own string instead")
    try:
        out = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise ExchangeRejected(f"the exchange sent a malformed number for {field}: {value!r}") from None
    if not out.is_finite():
        raise ExchangeRejected(f"the exchange sent a non-finite number for {field}: {value!r}")
    return out


def on_grid(broker: str, market: Market, order: OrderRequest) -> tuple[Decimal, Decimal | None]:
    """(quantity, limit price) on the market's grid: the quantity down to the lot, a limit price to
    the tick never more aggressive than asked (buys down, sells up). InvalidOrder, before anything
    is sent, for what no exchange would take: under the lot or the minimum quantity, a limit order
    without a positive price. Minimum notionals differ by exchange and are checked by each adapter."""
    quantity = floor_to_step(order.quantity, market.lot_size)
    if quantity <= 0 or quantity < market.min_quantity:
        raise InvalidOrder(
            f"{broker}: quantity {order.quantity} rounds to {quantity} on lot size {market.lot_size},"
            f" under the minimum {max(market.min_quantity, market.lot_size)} of {order.pair}"
        )
    if order.order_type is OrderType.MARKET:
        return quantity, None
    if order.limit_price is None or order.limit_price <= 0:
        raise InvalidOrder(f"{broker}: a limit order needs a positive limit price, got {order.limit_price}")
    price = (floor_to_step if order.side is Side.BUY else ceil_to_step)(order.limit_price, market.tick_size)
    if price <= 0:
        raise InvalidOrder(f"{broker}: limit price {order.limit_price} rounds to 0 on tick {market.tick_size}")
    return quantity, price


def _retry_after_s(headers: Mapping[str, str] | None) -> float | None:
    value = (headers or {}).get("Retry-After") or (headers or {}).get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


@contextlib.contextmanager
def typed_errors(exchange: ccxt.Exchange) -> Any:
    """ccxt's exception classes -> the venue's typed errors. Order matters: ccxt's hierarchy nests
    DDoSProtection under NetworkError and everything specific under ExchangeError."""
    try:
        yield
    except VenueError:
        raise
    except ccxt.AuthenticationError as exc:  # includes PermissionDenied, AccountSuspended
        raise AuthenticationFailed(f"{exchange.id}: authentication failed: {exc}") from exc
    except ccxt.InsufficientFunds as exc:
        raise InsufficientFunds(str(exc)) from exc
    except ccxt.DuplicateOrderId as exc:
        raise DuplicateClientOrderId(str(exc)) from exc
    except ccxt.OrderNotFound as exc:
        raise OrderNotFound(str(exc)) from exc
    except (ccxt.InvalidOrder, ccxt.BadSymbol) as exc:
        raise InvalidOrder(str(exc)) from exc
    except (ccxt.RateLimitExceeded, ccxt.DDoSProtection) as exc:
        raise RateLimited(str(exc), _retry_after_s(exchange.last_response_headers)) from exc
    except ccxt.OperationFailed as exc:  # NetworkError and its kin: timeouts, 5xx, dropped connections, bad nonces
        raise ExchangeUnavailable(f"{exchange.id}: {type(exc).__name__}: {exc}") from exc
    except ccxt.ExchangeError as exc:
        raise ExchangeRejected(f"{exchange.id}: {exc}") from exc
    except (OSError, TimeoutError) as exc:
        raise ExchangeUnavailable(f"{exchange.id}: {type(exc).__name__}: {exc}") from exc


class CcxtVenue:
    #: Every order is signed with the user's own keys: the router routes here only users with keys.
    requires_api_keys = True

    def __init__(
        self, adapter: Adapter, *, base_url: str = "", timeout_s: float = 5.0, max_accounts: int = 1000,
        market_account: Account | None = None,
    ) -> None:
        """`base_url` sends every call to an emulator or sandbox instead of the real exchange.
        `max_accounts`: signing instances kept; the least recently used one beyond is closed.
        `market_account`: keys for the market reads an exchange answers only signed (Alpaca lists
        its assets only to a key); None reads them keyless."""
        self.adapter = adapter
        self.broker = adapter.broker
        self.follow_up_costs: Mapping[str, Mapping[str, float]] = getattr(adapter, "follow_up_costs", {})
        self._base_url = base_url
        self._timeout_ms = int(timeout_s * 1000)
        self._max_accounts = max_accounts
        self._market_account = market_account
        #: One connection pool for every instance of this venue (ccxt would open one per instance).
        self._session: aiohttp.ClientSession | None = None
        self._public: ccxt.Exchange | None = None
        self._loaded = False
        #: user_id -> ((api_key, api_secret, passphrase) the instance was made with, the instance),
        #: least recently used first
        self._private: collections.OrderedDict[str, tuple[tuple[str, str, str], ccxt.Exchange]] = (
            collections.OrderedDict()
        )

    def _new_exchange(self, account: Account | None = None) -> ccxt.Exchange:
        if self._session is None:
            connector = aiohttp.TCPConnector(ssl=ssl.create_default_context(cafile=certifi.where()), limit=64)
            self._session = aiohttp.ClientSession(connector=connector)
        config: dict[str, Any] = {
            "enableRateLimit": False,  # the executor's limiter is in charge
            "timeout": self._timeout_ms,
            "session": self._session,
            **self.adapter.options(),
        }
        if account is not None:
            config.update(apiKey=account.api_key, secret=account.api_secret)
            if account.passphrase:
                config["password"] = account.passphrase
        exchange = getattr(ccxt, self.adapter.ccxt_id)(config)
        # ccxt waits this long (ms) on close for its own connector to wind down; the shared
        # session is closed here instead, once.
        exchange.timeout_on_exit = 0
        if self._base_url:
            self.adapter.redirect(exchange, self._base_url)
        return exchange

    def _public_exchange(self) -> ccxt.Exchange:
        if self._public is None:
            self._public = self._new_exchange(self._market_account)
        return self._public

    async def _loaded_public(self) -> ccxt.Exchange:
        """The keyless instance, its markets loaded."""
        if not self._loaded:
            await self.load_markets()
        return self._public_exchange()

    async def _account_exchange(self, account: Account) -> ccxt.Exchange:
        if not account.api_key:
            raise AuthenticationFailed(f"{self.broker}: no API keys stored for user {account.user_id!r}")
        credentials = (account.api_key, account.api_secret, account.passphrase)
        held = self._private.get(account.user_id)
        if held is not None and held[0] == credentials:
            self._private.move_to_end(account.user_id)
            return held[1]
        if held is not None:  # the user's keys changed: a fresh instance (fresh nonce)
            del self._private[account.user_id]
            await held[1].close()
        public = await self._loaded_public()
        exchange = self._new_exchange(account)
        exchange.set_markets(public.markets, public.currencies)
        self._private[account.user_id] = (credentials, exchange)
        while len(self._private) > self._max_accounts:
            _, (_, evicted) = self._private.popitem(last=False)
            await evicted.close()
        return exchange

    # -- Venue ----------------------------------------------------------------------------------

    async def load_markets(self) -> dict[str, Market]:
        ex = self._public_exchange()
        with typed_errors(ex):
            await ex.load_markets(reload=True)
            markets = self.adapter.markets(ex)
        self._loaded = True
        return markets

    async def fetch_fees(self) -> FeeSchedule:
        ex = await self._loaded_public()
        with typed_errors(ex):
            return await self.adapter.fees(ex)

    async def fetch_order_book(self, pair: str, depth: int = 0) -> OrderBook:
        ex = await self._loaded_public()
        with typed_errors(ex):
            return await self.adapter.order_book(ex, pair, depth)

    async def create_order(self, account: Account, order: OrderRequest) -> OrderReport:
        ex = await self._account_exchange(account)
        with typed_errors(ex):
            return await self.adapter.create_order(ex, order)

    async def fetch_order(self, account: Account, pair: str, client_order_id: str) -> OrderReport:
        ex = await self._account_exchange(account)
        with typed_errors(ex):
            return await self.adapter.fetch_order(ex, pair, client_order_id)

    async def cancel_order(self, account: Account, pair: str, client_order_id: str) -> OrderReport:
        ex = await self._account_exchange(account)
        with typed_errors(ex):
            return await self.adapter.cancel_order(ex, pair, client_order_id)

    async def fetch_balances(self, account: Account) -> dict[str, Balance]:
        ex = await self._account_exchange(account)
        with typed_errors(ex):
            return await self.adapter.balances(ex)

    async def close(self) -> None:
        held, self._private = self._private, collections.OrderedDict()
        public, self._public = self._public, None
        for exchange in [*(e for _, e in held.values()), *([public] if public else [])]:
            await exchange.close()
        if self._session is not None:
            await self._session.close()
            self._session = None
