"""How much of a strategy's signal one subscriber trades (services.domain.allocation), and its
proto form (services.permission.allocations)."""

from decimal import Decimal

import pytest
from nija.permission.v1 import permission_pb2 as pb

from services.domain.allocation import MIN_ORDER_USD, Allocation, AllocationProblem, Rule, Sizing, size_for
from services.permission.allocations import (
    MAX_PAIRS,
    allocation_from_pb,
    allocation_to_pb,
    describe,
    pb_path,
)

D = Decimal


def fixed(amount: str, **kw) -> Allocation:
    return Allocation(Rule.FIXED_USD, D(amount), **kw)


def percent(amount: str, capital: str, **kw) -> Allocation:
    return Allocation(Rule.PERCENT_OF_CAPITAL, D(amount), capital_usd=D(capital), **kw)


def times(amount: str, **kw) -> Allocation:
    return Allocation(Rule.MULTIPLIER, D(amount), **kw)


# ---- sizing --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("allocation", "strategy_size", "expected"),
    [
        (fixed("250"), "10", "250.00"),  # the strategy's size does not matter
        (fixed("250"), "99999", "250.00"),
        (percent("2.5", "10000"), "1", "250.00"),
        (percent("100", "40"), "1", "40.00"),
        (times("1"), "123.45", "123.45"),
        (times("0.5"), "1000", "500.00"),
        (times("3"), "100", "300.00"),
        (Allocation(), "77.7", "77.70"),  # the default: the strategy's own size
    ],
)
def test_each_rule_sizes_the_child_order(allocation: Allocation, strategy_size: str, expected: str):
    sizing = size_for(allocation, D(strategy_size), "BTC-USD")
    assert sizing == Sizing(D(expected))
    assert str(sizing.size_usd) == expected  # whole cents, exactly


def test_the_cap_limits_every_rule_and_only_when_lower():
    assert size_for(fixed("500", max_order_usd=D("120")), D(1), "BTC-USD").size_usd == D("120")
    assert size_for(percent("50", "1000", max_order_usd=D("120")), D(1), "BTC-USD").size_usd == D("120")
    assert size_for(times("2", max_order_usd=D("120")), D(100), "BTC-USD").size_usd == D("120")
    assert size_for(times("2", max_order_usd=D("1000")), D(100), "BTC-USD").size_usd == D("200")


def test_the_pair_filter_skips_other_pairs_with_a_reason():
    allocation = times("1", pairs=frozenset({"BTC-USD", "ETH-USD"}))
    assert size_for(allocation, D(100), "ETH-USD").size_usd == D("100")
    skipped = size_for(allocation, D(100), "SOL-USD")
    assert skipped.size_usd is None
    assert skipped.skipped.startswith("PAIR_FILTERED") and "SOL-USD" in skipped.skipped
    # No filter: every pair.
    assert size_for(times("1"), D(100), "SOL-USD").size_usd == D("100")


@pytest.mark.parametrize(
    ("allocation", "strategy_size", "expected"),
    [
        (times("0.333"), "100", "33.30"),
        (times("0.3333"), "100", "33.33"),  # 33.33, not 33.34: never rounded up
        (times("1"), "10.019", "10.01"),
        (percent("33.3333", "100"), "1", "33.33"),
        (fixed("5.999"), "1", "5.99"),
        (times("1", max_order_usd=D("9.999")), "50", "9.99"),
    ],
)
def test_sizes_are_cut_down_to_whole_cents(allocation: Allocation, strategy_size: str, expected: str):
    assert size_for(allocation, D(strategy_size), "BTC-USD").size_usd == D(expected)


def test_below_the_minimum_the_subscriber_is_skipped():
    assert size_for(fixed(str(MIN_ORDER_USD)), D(1), "BTC-USD").size_usd == MIN_ORDER_USD
    for allocation, strategy_size in [(fixed("0.99"), "1"), (times("0.01"), "99")]:  # 0.99 both
        skipped = size_for(allocation, D(strategy_size), "BTC-USD")
        assert skipped.size_usd is None
        assert skipped.skipped.startswith("SIZE_TOO_SMALL")
    # Cents are cut before the minimum is checked: 0.999 is 0.99, too small.
    assert size_for(times("1"), D("0.999"), "BTC-USD").size_usd is None
    # A cap under the minimum skips every signal.
    assert size_for(times("1", max_order_usd=D("0.5")), D(100), "BTC-USD").size_usd is None


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: fixed("0"), "fixed_usd"),
        (lambda: fixed("-5"), "fixed_usd"),
        (lambda: times("0"), "multiplier"),
        (lambda: times("NaN"), "multiplier"),
        (lambda: times("Infinity"), "multiplier"),
        (lambda: percent("0", "1000"), "percent_of_capital"),
        (lambda: percent("100.01", "1000"), "percent"),
        (lambda: percent("10", "0"), "capital_usd"),
        (lambda: Allocation(Rule.PERCENT_OF_CAPITAL, D(10)), "capital_usd"),
        (lambda: fixed("10", capital_usd=D(100)), "capital_usd"),
        (lambda: fixed("10", max_order_usd=D(0)), "max_order_usd"),
        (lambda: fixed("10", max_order_usd=D("-1")), "max_order_usd"),
    ],
)
def test_bad_allocations_are_refused_naming_the_field(make, field: str):
    with pytest.raises(AllocationProblem) as problem:
        make()
    assert problem.value.field == field


# ---- on the wire ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "allocation"),
    [
        (pb.Allocation(fixed_usd="100.5"), fixed("100.5")),
        (pb.Allocation(percent_of_capital=pb.PercentOfCapital(percent="2.5", capital_usd="10000")),
         percent("2.5", "10000")),
        (pb.Allocation(multiplier="0.25", max_order_usd="500", pairs=["ETH-USD", "BTC-USD"]),
         times("0.25", max_order_usd=D(500), pairs=frozenset({"BTC-USD", "ETH-USD"}))),
    ],
)
def test_proto_round_trip(message: pb.Allocation, allocation: Allocation):
    assert allocation_from_pb(message) == allocation
    back = allocation_to_pb(allocation)
    assert allocation_from_pb(back) == allocation
    assert list(back.pairs) == sorted(allocation.pairs)


def test_no_allocation_or_no_rule_is_multiplier_one():
    assert allocation_from_pb(None) == Allocation(Rule.MULTIPLIER, D(1))
    assert allocation_from_pb(pb.Allocation()) == Allocation(Rule.MULTIPLIER, D(1))
    capped = allocation_from_pb(pb.Allocation(max_order_usd="50"))
    assert (capped.rule, capped.amount, capped.max_order_usd) == (Rule.MULTIPLIER, D(1), D(50))
    assert allocation_to_pb(Allocation()) == pb.Allocation(multiplier="1")


@pytest.mark.parametrize(
    ("message", "field"),
    [
        (pb.Allocation(fixed_usd=""), "fixed_usd"),
        (pb.Allocation(fixed_usd="1e3"), "fixed_usd"),
        (pb.Allocation(fixed_usd="0"), "fixed_usd"),
        (pb.Allocation(multiplier="abc"), "multiplier"),
        (pb.Allocation(multiplier="-2"), "multiplier"),
        (pb.Allocation(percent_of_capital=pb.PercentOfCapital(percent="0", capital_usd="100")), "percent"),
        (pb.Allocation(percent_of_capital=pb.PercentOfCapital(percent="101", capital_usd="100")), "percent"),
        (pb.Allocation(percent_of_capital=pb.PercentOfCapital(percent="5")), "capital_usd"),
        (pb.Allocation(percent_of_capital=pb.PercentOfCapital(percent="5", capital_usd="-1")), "capital_usd"),
        (pb.Allocation(multiplier="1", max_order_usd="0"), "max_order_usd"),
        (pb.Allocation(multiplier="1", max_order_usd="NaN"), "max_order_usd"),
        (pb.Allocation(multiplier="1", pairs=["btc/usd"]), "pairs"),
        (pb.Allocation(multiplier="1", pairs=[""]), "pairs"),
        (pb.Allocation(multiplier="1", pairs=[f"C{i}-USD" for i in range(MAX_PAIRS + 1)]), "pairs"),
    ],
)
def test_bad_proto_allocations_name_the_proto_field(message: pb.Allocation, field: str):
    with pytest.raises(AllocationProblem) as problem:
        allocation_from_pb(message)
    assert problem.value.field == field


def test_the_pair_limit_itself_is_allowed():
    pairs = [f"C{i}-USD" for i in range(MAX_PAIRS)]
    assert len(allocation_from_pb(pb.Allocation(pairs=pairs)).pairs) == MAX_PAIRS


def test_problem_fields_map_to_their_place_in_the_message():
    assert pb_path("percent") == "percent_of_capital.percent"
    assert pb_path("capital_usd") == "percent_of_capital.capital_usd"
    assert pb_path("fixed_usd") == "fixed_usd"


def test_describe_reads_like_the_rule():
    assert describe(fixed("100")) == "fixed $100"
    assert describe(percent("2.50", "10000")) == "2.5% of $10000"
    assert describe(times("0.5", max_order_usd=D(200), pairs=frozenset({"ETH-USD", "BTC-USD"}))) == (
        "x0.5, max $200, pairs BTC-USD,ETH-USD"
    )
