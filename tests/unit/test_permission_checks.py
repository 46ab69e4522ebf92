from decimal import Decimal

import pytest

from services.domain.brokers import BROKERS
from services.domain.signal import Side
from services.permission.checks import Decision, Denial, TradeRequest, check_trade
from services.permission.demo import ALICE, BOB, CAROL, DAVE
from services.permission.permissions import BadPermissions, UserPermissions


def trade(user: str, pair: str = "BTC-USD", size: str = "100") -> TradeRequest:
    return TradeRequest(user_id=user, pair=pair, side=Side.BUY, size_usd=Decimal(size), signal_id="s-1")


def user(**changes: object) -> UserPermissions:
    fields = dict(
        user_id="erin",
        enabled=True,
        allowed_brokers=("kraken", "coinbase"),
        allowed_pairs=(),
        max_order_size_usd=Decimal("1000"),
    )
    fields.update(changes)
    return UserPermissions(**fields)  # type: ignore[arg-type]


def test_allowed_returns_sorted_brokers():
    decision = check_trade(user(), trade("erin"))
    assert decision == Decision(allowed=True, reason="", code=None, brokers=("coinbase", "kraken"))


def test_demo_alice_is_allowed_on_every_broker():
    decision = check_trade(ALICE, trade("alice", "SOL-USD", "50000"))
    assert decision.allowed
    assert decision.brokers == tuple(sorted(BROKERS))


def test_demo_bob_is_limited_to_coinbase_and_kraken():
    assert check_trade(BOB, trade("bob")).brokers == ("coinbase", "kraken")


def test_disabled_user_is_denied():
    decision = check_trade(CAROL, trade("carol"))
    assert not decision.allowed
    assert decision.code is Denial.USER_DISABLED
    assert decision.reason == "trading disabled for user carol"
    assert decision.brokers == ()


def test_disabled_wins_over_every_other_denial():
    perms = user(enabled=False, allowed_pairs=("ETH-USD",), allowed_brokers=())
    decision = check_trade(perms, trade("erin", size="5000"))
    assert decision.code is Denial.USER_DISABLED


def test_pair_outside_allowed_pairs_is_denied():
    decision = check_trade(DAVE, trade("dave", "SOL-USD"))
    assert not decision.allowed
    assert decision.code is Denial.PAIR_NOT_ALLOWED
    assert "SOL-USD" in decision.reason and "BTC-USD, ETH-USD" in decision.reason


@pytest.mark.parametrize("pair", ["BTC-USD", "ETH-USD"])
def test_pair_inside_allowed_pairs_is_allowed(pair: str):
    assert check_trade(DAVE, trade("dave", pair)).allowed


@pytest.mark.parametrize("pair", ["BTC-USD", "DOGE-USDT", "XRP-EUR"])
def test_empty_allowed_pairs_means_every_pair(pair: str):
    assert check_trade(user(allowed_pairs=()), trade("erin", pair)).allowed


def test_size_above_max_is_denied_naming_both_figures():
    decision = check_trade(DAVE, trade("dave", size="1000.01"))
    assert not decision.allowed
    assert decision.code is Denial.SIZE_ABOVE_MAX
    assert "1000.01" in decision.reason and "1000 USD" in decision.reason


@pytest.mark.parametrize("size", ["1000", "1000.00", "999.999999"])
def test_size_equal_to_or_below_max_is_allowed(size: str):
    assert check_trade(DAVE, trade("dave", size=size)).allowed


def test_no_allowed_broker_is_denied():
    decision = check_trade(user(allowed_brokers=()), trade("erin"))
    assert not decision.allowed
    assert decision.code is Denial.NO_ALLOWED_BROKER
    assert decision.reason == "no broker allowed for user erin"


def test_checking_with_another_users_permissions_is_a_bug():
    with pytest.raises(ValueError):
        check_trade(ALICE, trade("bob"))


def test_permissions_are_normalised():
    perms = user(allowed_brokers=("kraken", "coinbase", "kraken"), allowed_pairs=("ETH-USD", "BTC-USD"))
    assert perms.allowed_brokers == ("coinbase", "kraken")
    assert perms.allowed_pairs == ("BTC-USD", "ETH-USD")


@pytest.mark.parametrize(
    "changes",
    [
        {"user_id": ""},
        {"user_id": "no spaces"},
        {"enabled": 1},
        {"allowed_brokers": ("coinbase", "ftx")},
        {"allowed_pairs": ("btc-usd",)},
        {"max_order_size_usd": Decimal("0")},
        {"max_order_size_usd": Decimal("-5")},
        {"max_order_size_usd": Decimal("NaN")},
        {"max_order_size_usd": Decimal("Infinity")},
        {"max_order_size_usd": 1000.0},
    ],
)
def test_malformed_permissions_are_refused(changes: dict[str, object]):
    with pytest.raises(BadPermissions):
        user(**changes)
