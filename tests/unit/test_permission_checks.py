from decimal import Decimal

import pytest

from services.domain.brokers import BROKERS
from services.domain.signal import Side
from services.permission.checks import Decision, Denial, TradeRequest, check_trade
from services.permission.demo import ALICE, BOB, CAROL, DAVE
from services.permission.permissions import (
    MAX_SLIPPAGE_BPS,
    BadPermissions,
    RoutingPolicy,
    RoutingPreferences,
    UserPermissions,
)


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


# Routing preferences: the record.


def test_preferences_default_to_none_and_are_normalised():
    assert user().preferences == RoutingPreferences()
    assert RoutingPreferences() == RoutingPreferences(
        preferred_brokers=(), blocked_brokers=(), routing_policy=None, max_slippage_bps=0
    )
    prefs = RoutingPreferences(
        preferred_brokers=("kraken", "coinbase", "kraken"),
        blocked_brokers=["binance", "alpaca", "binance"],  # any iterable; kept as a tuple
        routing_policy=RoutingPolicy.COST,
        max_slippage_bps=50,
    )
    assert prefs.preferred_brokers == ("coinbase", "kraken")
    assert prefs.blocked_brokers == ("alpaca", "binance")


@pytest.mark.parametrize("bps", [0, 1, MAX_SLIPPAGE_BPS])
def test_slippage_bound_accepts_zero_to_100_percent(bps: int):
    assert RoutingPreferences(max_slippage_bps=bps).max_slippage_bps == bps


@pytest.mark.parametrize("policy", [None, RoutingPolicy.SCORE, RoutingPolicy.COST])
def test_every_policy_is_accepted(policy: RoutingPolicy | None):
    assert RoutingPreferences(routing_policy=policy).routing_policy is policy


@pytest.mark.parametrize(
    ("changes", "message_has"),
    [
        ({"preferred_brokers": ("ftx",)}, "unknown brokers ['ftx'] in preferred_brokers"),
        ({"blocked_brokers": ("kraken", "mtgox")}, "unknown brokers ['mtgox'] in blocked_brokers"),
        ({"blocked_brokers": ("Kraken",)}, "unknown brokers ['Kraken']"),
        ({"blocked_brokers": (None,)}, "unknown brokers [None]"),
        ({"preferred_brokers": "kraken"}, "preferred_brokers must be a sequence of broker names"),
        ({"blocked_brokers": None}, "blocked_brokers must be a sequence of broker names"),
        (
            {"preferred_brokers": ("kraken", "coinbase"), "blocked_brokers": ("kraken", "binance")},
            "brokers ['kraken'] are both preferred and blocked",
        ),
        ({"routing_policy": "cost"}, "routing_policy must be a RoutingPolicy or None"),
        ({"routing_policy": 2}, "routing_policy must be a RoutingPolicy or None"),
        ({"max_slippage_bps": -1}, "max_slippage_bps"),
        ({"max_slippage_bps": MAX_SLIPPAGE_BPS + 1}, "max_slippage_bps"),
        ({"max_slippage_bps": 2**32}, "max_slippage_bps"),
        ({"max_slippage_bps": 1.5}, "max_slippage_bps"),
        ({"max_slippage_bps": "50"}, "max_slippage_bps"),
        ({"max_slippage_bps": True}, "max_slippage_bps"),
        ({"max_slippage_bps": None}, "max_slippage_bps"),
    ],
)
def test_malformed_preferences_are_refused(changes: dict[str, object], message_has: str):
    with pytest.raises(BadPermissions) as err:
        RoutingPreferences(**changes)  # type: ignore[arg-type]
    assert message_has in str(err.value)


@pytest.mark.parametrize("preferences", [None, {}, {"preferred_brokers": ("kraken",)}])
def test_permissions_refuse_preferences_of_the_wrong_type(preferences: object):
    with pytest.raises(BadPermissions, match="preferences must be RoutingPreferences"):
        user(preferences=preferences)


def test_allowed_brokers_as_a_lone_string_is_refused():
    with pytest.raises(BadPermissions, match="allowed_brokers must be a sequence"):
        user(allowed_brokers="kraken")


def test_demo_users_preferences():
    assert ALICE.preferences == RoutingPreferences()
    assert BOB.preferences == RoutingPreferences(preferred_brokers=("kraken",))
    assert CAROL.preferences == RoutingPreferences()
    assert DAVE.preferences == RoutingPreferences(routing_policy=RoutingPolicy.COST, max_slippage_bps=50)
    # Their other fields are as before the preferences existed.
    assert (BOB.enabled, BOB.allowed_brokers, BOB.allowed_pairs, BOB.max_order_size_usd) == (
        True, ("coinbase", "kraken"), (), Decimal("5000")
    )
    assert (DAVE.enabled, DAVE.allowed_brokers, DAVE.allowed_pairs, DAVE.max_order_size_usd) == (
        True, tuple(sorted(BROKERS)), ("BTC-USD", "ETH-USD"), Decimal("1000")
    )


# Routing preferences: the check.


def test_allowed_decision_carries_the_preferences():
    prefs = RoutingPreferences(
        preferred_brokers=("kraken",), routing_policy=RoutingPolicy.SCORE, max_slippage_bps=25
    )
    decision = check_trade(user(preferences=prefs), trade("erin"))
    assert decision == Decision(allowed=True, brokers=("coinbase", "kraken"), preferences=prefs)


@pytest.mark.parametrize(("demo", "user_id"), [(ALICE, "alice"), (BOB, "bob"), (DAVE, "dave")])
def test_demo_decisions_carry_the_demo_preferences(demo: UserPermissions, user_id: str):
    assert check_trade(demo, trade(user_id)).preferences == demo.preferences


def test_blocked_brokers_are_removed_from_the_decision():
    prefs = RoutingPreferences(blocked_brokers=("kraken",), preferred_brokers=("coinbase",))
    decision = check_trade(user(allowed_brokers=BROKERS, preferences=prefs), trade("erin"))
    assert decision.allowed
    assert decision.brokers == ("alpaca", "binance", "coinbase")
    assert decision.preferences == prefs


def test_blocking_a_broker_that_is_not_allowed_changes_nothing():
    prefs = RoutingPreferences(blocked_brokers=("alpaca", "binance"))
    decision = check_trade(user(preferences=prefs), trade("erin"))
    assert decision.allowed
    assert decision.brokers == ("coinbase", "kraken")


def test_every_allowed_broker_blocked_is_denied_naming_them():
    prefs = RoutingPreferences(blocked_brokers=("alpaca", "coinbase", "kraken"))
    decision = check_trade(user(preferences=prefs), trade("erin"))
    assert decision == Decision(
        allowed=False,
        reason="every broker allowed for user erin is blocked by the user's routing preferences "
        "(blocked: coinbase, kraken)",
        code=Denial.NO_ALLOWED_BROKER,
    )
    # Denials carry neither brokers nor preferences.
    assert decision.brokers == ()
    assert decision.preferences == RoutingPreferences()


def test_no_allowed_broker_keeps_its_own_reason_when_some_are_blocked():
    prefs = RoutingPreferences(blocked_brokers=("kraken",))
    decision = check_trade(user(allowed_brokers=(), preferences=prefs), trade("erin"))
    assert decision.code is Denial.NO_ALLOWED_BROKER
    assert decision.reason == "no broker allowed for user erin"


@pytest.mark.parametrize(
    ("changes", "request_", "code"),
    [
        ({"enabled": False}, trade("erin"), Denial.USER_DISABLED),
        ({"allowed_pairs": ("ETH-USD",)}, trade("erin", "BTC-USD"), Denial.PAIR_NOT_ALLOWED),
        ({}, trade("erin", size="1000.01"), Denial.SIZE_ABOVE_MAX),
    ],
)
def test_all_blocked_is_checked_last(changes: dict[str, object], request_: TradeRequest, code: Denial):
    prefs = RoutingPreferences(blocked_brokers=BROKERS)
    assert check_trade(user(preferences=prefs, **changes), request_).code is code
