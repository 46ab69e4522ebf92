"""What the network between a client and an exchange does, for every front end of the exchange.

Latency, outages, 5xx, 429s and answers lost on the way back are I/O behaviour, not exchange
state, so they live here and never in the engine. `SetFault` (gRPC) makes one broker slow,
unreachable or flaky; every call for that broker, through the gRPC front end or an exchange's own
HTTP dialect (`services/emulators`), passes through `Network.trip` first and is refused the way
that front end refuses things.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import random


@dataclasses.dataclass(frozen=True)
class Fault:
    """How one broker's exchange misbehaves: unreachable, slow, flaky, or several at once.

    The rates are shares of calls in [0, 1]. `retry_after_ms` 0 means the 429s carry no hint.
    `seed` is the seed of this fault's dice (always set: SetFault picks one when the caller did not).
    """

    unavailable: bool = False
    latency_s: float = 0.0
    error_rate: float = 0.0
    lose_response_rate: float = 0.0
    rate_limit_rate: float = 0.0
    retry_after_ms: int = 0
    seed: int = 0

    @property
    def active(self) -> bool:
        return (
            self.unavailable
            or self.latency_s > 0
            or self.error_rate > 0
            or self.lose_response_rate > 0
            or self.rate_limit_rate > 0
        )


NO_FAULT = Fault()


class Strike(enum.Enum):
    """What a fault did to one request before it reached the exchange (so it changed nothing)."""

    UNAVAILABLE = "unavailable"
    RATE_LIMITED = "rate_limited"
    ERROR = "error"


class _FaultDice:
    """One broker's fault and the dice that decide, call by call, whether it strikes.

    A die is rolled only for a rate above zero, so the outcome of one kind of fault does not depend
    on how many calls of another kind came between: with a seed, the same sequence of PlaceOrders
    loses the same answers however many lookups the caller makes in between.
    """

    def __init__(self, fault: Fault) -> None:
        self.fault = fault
        self._rng = random.Random(fault.seed)

    def strikes(self, rate: float) -> bool:
        return rate > 0 and self._rng.random() < rate


class Network:
    """Every broker's current fault, and the round trip each request makes through it."""

    def __init__(self, latency_s: float = 0.0) -> None:
        #: Stands in for the round trip to a real exchange, so latency-aware routing has something to measure.
        self.latency_s = latency_s
        #: The only writer is `set`; brokers without an entry behave normally.
        self._faults: dict[str, _FaultDice] = {}

    def fault(self, broker: str) -> Fault:
        dice = self._faults.get(broker)
        return dice.fault if dice is not None else NO_FAULT

    def set(self, broker: str, fault: Fault) -> None:
        """Every call starts fresh dice: the same fault replays the same scenario."""
        if fault.active:
            self._faults[broker] = _FaultDice(fault)
        else:
            self._faults.pop(broker, None)

    async def trip(self, broker: str) -> Strike | None:
        """The way to `broker`'s exchange: the configured latency plus any fault's, then the
        outage, the 429 and the 5xx if they strike, all before the request reaches the engine."""
        delay = self.latency_s + self.fault(broker).latency_s
        if delay > 0:
            await asyncio.sleep(delay)
        # Judged when the request arrives, after the trip: a fault lifted or changed meanwhile is
        # the one that applies.
        dice = self._faults.get(broker)
        if dice is None:
            return None
        if dice.fault.unavailable:
            return Strike.UNAVAILABLE
        if dice.strikes(dice.fault.rate_limit_rate):
            return Strike.RATE_LIMITED
        if dice.strikes(dice.fault.error_rate):
            return Strike.ERROR
        return None

    def loses_response(self, broker: str) -> bool:
        """Whether the answer to an order the engine just executed is lost on its way back."""
        dice = self._faults.get(broker)
        return dice is not None and dice.strikes(dice.fault.lose_response_rate)
