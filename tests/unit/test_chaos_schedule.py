"""The fault schedule: reproducible from its seed, every service kind killed, exchange faults
that never overlap on one broker, and a quiet end for recovery."""

from __future__ import annotations

from collections import Counter

import pytest

from services.chaos.schedule import EXCHANGE_FAULTS, Kind, Plan, schedule, signals_due

TARGETS = ("router", "router-2", "aggregator", "permission", "executor-coinbase", "executor-kraken",
           "executor-binance", "executor-alpaca")
BROKERS = ("coinbase", "kraken", "binance", "alpaca")


def plan(**kw: object) -> Plan:
    base: dict[str, object] = {"seed": 7, "duration_s": 600.0, "kill_targets": TARGETS, "brokers": BROKERS}
    return Plan(**{**base, **kw})  # type: ignore[arg-type]


def test_the_same_seed_gives_the_same_schedule_and_another_seed_another() -> None:
    assert schedule(plan()) == schedule(plan())
    assert schedule(plan()) != schedule(plan(seed=8))


def test_ten_minutes_kill_every_service_kind_at_least_30_times_in_all() -> None:
    events = schedule(plan())
    kills = Counter(e.target for e in events if e.kind is Kind.KILL)
    assert sum(kills.values()) >= 30
    assert set(kills) == set(TARGETS)
    assert max(kills.values()) - min(kills.values()) <= 1  # round-robin: nobody is spared
    assert {e.kind for e in events} >= set(EXCHANGE_FAULTS)


def test_faults_start_after_the_warm_up_and_end_before_the_quiet_end() -> None:
    p = plan(duration_s=60.0, quiet_s=15.0, warmup_s=5.0, kill_every_s=4.0, exchange_fault_every_s=3.0)
    events = schedule(p)
    assert events and all(5.0 <= e.at_s and e.at_s + e.duration_s <= 45.0 for e in events)
    assert [e.at_s for e in events] == sorted(e.at_s for e in events)


def test_one_broker_has_one_exchange_fault_at_a_time() -> None:
    busy: dict[str, float] = {}
    for e in schedule(plan(exchange_fault_every_s=2.0)):
        if e.kind is Kind.KILL:
            continue
        assert busy.get(e.target, 0.0) <= e.at_s, e
        busy[e.target] = e.at_s + e.duration_s
        assert e.describe().strip().startswith(f"{e.at_s:.1f} s")


@pytest.mark.parametrize("kw", [{"kill_targets": ()}, {"brokers": ()}, {"duration_s": 20.0}, {"kill_every_s": 0}])
def test_a_plan_that_cannot_run_is_refused(kw: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        plan(**kw)


def test_the_load_sends_exactly_duration_times_rate_however_late_its_last_ticks_wake() -> None:
    # 60 s at 8/s: one at once, then on schedule, never more than 480.
    assert signals_due(0.0, 60, 8) == 1
    assert signals_due(0.124, 60, 8) == 1
    assert signals_due(0.125, 60, 8) == 2
    assert signals_due(59.874, 60, 8) == 479
    assert signals_due(59.99, 60, 8) == 480
    # The loop slept past the end before its last tick (seen in CI: 479 sent, 480 expected).
    assert signals_due(60.2, 60, 8) == 480
    assert signals_due(600.0, 600, 15) == 9000
    assert max(signals_due(t / 100, 60, 8) for t in range(7000)) == 480
