"""The generic half of the live venues: ccxt's exception classes typed at the edge, exact decimals,
one signing instance per user (renewed when the keys change, the least recently used closed)."""

from __future__ import annotations

import types
from decimal import Decimal
from typing import Any

import ccxt.async_support as ccxt
import pytest

from services.domain.rate_limits import Operation, RateLimiter, profile_for, with_follow_ups
from services.executor.venues.adapters import ADAPTERS
from services.executor.venues.base import (
    Account,
    AuthenticationFailed,
    DuplicateClientOrderId,
    ExchangeRejected,
    ExchangeUnavailable,
    InsufficientFunds,
    InvalidOrder,
    OrderNotFound,
    RateLimited,
)
from services.executor.venues.live import CcxtVenue, dec, typed_errors


def _exchange() -> Any:
    """What typed_errors reads of a ccxt instance: its id and the last response's headers."""
    return types.SimpleNamespace(id="binance", last_response_headers=None)


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (ccxt.AuthenticationError, AuthenticationFailed),
        (ccxt.PermissionDenied, AuthenticationFailed),
        (ccxt.AccountSuspended, AuthenticationFailed),
        (ccxt.InsufficientFunds, InsufficientFunds),
        (ccxt.DuplicateOrderId, DuplicateClientOrderId),
        (ccxt.OrderNotFound, OrderNotFound),
        (ccxt.InvalidOrder, InvalidOrder),
        (ccxt.BadSymbol, InvalidOrder),
        (ccxt.RateLimitExceeded, RateLimited),
        (ccxt.DDoSProtection, RateLimited),  # a NetworkError in ccxt's tree: must not become "unavailable"
        (ccxt.RequestTimeout, ExchangeUnavailable),
        (ccxt.ExchangeNotAvailable, ExchangeUnavailable),
        (ccxt.InvalidNonce, ExchangeUnavailable),
        (ccxt.NetworkError, ExchangeUnavailable),
        (ccxt.OperationFailed, ExchangeUnavailable),
        (ccxt.BadRequest, ExchangeRejected),
        (ccxt.ExchangeError, ExchangeRejected),
        (TimeoutError, ExchangeUnavailable),
        (ConnectionResetError, ExchangeUnavailable),
    ],
)
def test_ccxt_errors_are_typed_by_class(raised: type[Exception], expected: type[Exception]) -> None:
    exchange = _exchange()
    with pytest.raises(expected) as info, typed_errors(exchange):
        raise raised("binance {\"code\":-1,\"msg\":\"whatever the text says\"}")
    assert isinstance(info.value.__cause__, raised)


def test_transport_errors_count_against_the_breaker_and_nothing_else_does() -> None:
    assert ExchangeUnavailable("x").transport
    assert not any(cls("x").transport for cls in (AuthenticationFailed, ExchangeRejected, InvalidOrder))


def test_a_429_carries_the_exchange_retry_after() -> None:
    exchange = _exchange()
    exchange.last_response_headers = {"Retry-After": "7"}
    with pytest.raises(RateLimited) as info, typed_errors(exchange):
        raise ccxt.DDoSProtection("429")
    assert info.value.retry_after_s == 7.0
    exchange.last_response_headers = {"Retry-After": "soon"}
    with pytest.raises(RateLimited) as info, typed_errors(exchange):
        raise ccxt.RateLimitExceeded("429")
    assert info.value.retry_after_s is None


def test_decimals_come_from_strings_never_floats() -> None:
    assert dec("0.10000000") == Decimal("0.1")
    assert dec(28) == Decimal(28)
    with pytest.raises(TypeError):
        dec(0.1)
    for bad in ("abc", "", "NaN", "Infinity", None):
        with pytest.raises(ExchangeRejected):
            dec(bad, "price")


class _Adapter:
    broker = "binance"
    ccxt_id = "binance"

    def options(self) -> dict[str, Any]:
        return {}

    def redirect(self, exchange: ccxt.Exchange, base_url: str) -> None:
        pass


def _account(user: str, secret: str = "s") -> Account:
    return Account(user_id=user, account_id=user, api_key=f"key-{user}", api_secret=secret)


async def test_one_instance_per_user_renewed_when_the_keys_change_and_bounded() -> None:
    venue = CcxtVenue(_Adapter(), max_accounts=2)  # type: ignore[arg-type]
    venue._loaded = True  # as if loaded: no markets needed to hand out signing instances
    venue._public_exchange().set_markets({})
    try:
        alice = await venue._account_exchange(_account("alice"))
        assert await venue._account_exchange(_account("alice")) is alice
        bob = await venue._account_exchange(_account("bob"))
        assert bob is not alice and (bob.apiKey, alice.apiKey) == ("key-bob", "key-alice")

        rotated = await venue._account_exchange(_account("alice", secret="new"))
        assert rotated is not alice and rotated.secret == "new"

        await venue._account_exchange(_account("carol"))  # a third user: bob, the oldest, goes
        assert set(venue._private) == {"alice", "carol"}
        assert all(e.session is venue._session for _, e in venue._private.values())
    finally:
        await venue.close()
    assert venue._session is None and not venue._private


async def test_a_user_without_keys_is_refused_before_any_request() -> None:
    venue = CcxtVenue(_Adapter())  # type: ignore[arg-type]
    try:
        with pytest.raises(AuthenticationFailed, match="no API keys stored for user 'dave'"):
            await venue._account_exchange(Account(user_id="dave", account_id="dave"))
    finally:
        await venue.close()


@pytest.mark.parametrize("broker", ["binance", "kraken", "coinbase", "alpaca"])
def test_a_live_venues_read_backs_are_charged_to_the_exchanges_budgets(broker: str) -> None:
    base = profile_for(broker)
    extra = ADAPTERS[broker].follow_up_costs
    live = with_follow_ups(base, extra)  # every budget named exists, every cost fits its budget
    assert extra, f"{broker}: its live venue reads orders back, which costs requests"
    for op, charges in extra.items():
        for budget, cost in charges.items():
            assert live.costs[Operation(op)][budget] == base.costs[Operation(op)].get(budget, 0) + cost


def test_kraken_orders_spend_the_call_counter_on_the_live_venue_only() -> None:
    sim = RateLimiter(profile_for("kraken"))
    live = RateLimiter(with_follow_ups(profile_for("kraken"), ADAPTERS["kraken"].follow_up_costs))
    # The starter counter holds 15: read-backs of 3 per order allow 5 orders at once, then one per
    # 3 / 0.33 s; the simulated venue's orders never touch the counter.
    assert [live.reserve(0.0, "alice", "place_order") for _ in range(5)] == [0.0] * 5
    assert live.reserve(0.0, "alice", "place_order") == pytest.approx(3 / 0.33)
    assert [sim.reserve(0.0, "alice", "place_order") for _ in range(60)] == [0.0] * 60
