"""services.runtime.retrying: a peer busy or away is asked again within the budget; a refusal,
or the budget spent, is raised at once. Time is injected: nothing sleeps."""

from __future__ import annotations

import itertools

import grpc
import pytest

from services.runtime.errors import ServiceError
from services.runtime.retrying import retrying

BUSY = ServiceError(grpc.StatusCode.DEADLINE_EXCEEDED, "SLOW", "busy")
AWAY = ServiceError(grpc.StatusCode.UNAVAILABLE, "AWAY", "away")
REFUSED = ServiceError(grpc.StatusCode.PERMISSION_DENIED, "NO", "no")


class Clock:
    def __init__(self) -> None:
        self.now, self.slept, self.told = 0.0, [], []

    async def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s

    def run(self, outcomes: list[object], for_s: float = 10.0):  # type: ignore[no-untyped-def]
        remaining = iter(outcomes)

        async def attempt() -> object:
            outcome = next(remaining)
            if isinstance(outcome, Exception):
                raise outcome
            return outcome

        return retrying(attempt, for_s=for_s, delays=itertools.repeat(1.0), clock=lambda: self.now,
                        sleep=self.sleep, on_retry=lambda exc, delay: self.told.append((exc.code, delay)))


async def test_busy_or_away_is_asked_again_until_it_answers() -> None:
    clock = Clock()
    assert await clock.run([BUSY, AWAY, "keys"]) == "keys"
    assert clock.slept == [1.0, 1.0]
    assert clock.told == [(grpc.StatusCode.DEADLINE_EXCEEDED, 1.0), (grpc.StatusCode.UNAVAILABLE, 1.0)]


async def test_a_refusal_is_raised_at_once() -> None:
    clock = Clock()
    with pytest.raises(ServiceError) as raised:
        await clock.run([REFUSED, "never"])
    assert raised.value is REFUSED and clock.slept == []


async def test_the_last_transient_error_is_raised_once_the_budget_is_spent() -> None:
    clock = Clock()
    with pytest.raises(ServiceError) as raised:
        await clock.run([BUSY] * 10, for_s=3.0)
    assert raised.value is BUSY and clock.slept == [1.0, 1.0, 1.0]
