"""Prometheus text -> samples, and counter deltas between two scrapes. Pure: no I/O."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

from prometheus_client.parser import text_string_to_metric_families

Labels = tuple[tuple[str, str], ...]


@dataclasses.dataclass(frozen=True)
class Sample:
    name: str  # as exposed: "nija_trades_routed_total", "nija_routing_latency_seconds_sum", ...
    labels: Labels  # sorted (name, value) pairs
    value: float


class Samples:
    """One scrape of one /metrics endpoint."""

    def __init__(self, samples: Iterable[Sample] = ()) -> None:
        self._by_name: dict[str, dict[Labels, float]] = {}
        for s in samples:
            self._by_name.setdefault(s.name, {})[s.labels] = s.value

    def series(self, name: str, **labels: str) -> dict[Labels, float]:
        """Every series of `name` whose labels include `labels`."""
        return {
            key: value for key, value in self._by_name.get(name, {}).items()
            if all(dict(key).get(k) == v for k, v in labels.items())
        }

    def total(self, name: str, **labels: str) -> float:
        """The sum of those series (0 when there are none)."""
        return sum(self.series(name, **labels).values())

    def value(self, name: str, **labels: str) -> float | None:
        """A gauge's value (the first matching series), None when it is not exported."""
        return next(iter(self.series(name, **labels).values()), None)

    def __len__(self) -> int:
        return sum(len(series) for series in self._by_name.values())


def parse_metrics(text: str) -> Samples:
    """Samples from the Prometheus text exposition format; ValueError when it is not that."""
    return Samples(
        Sample(s.name, tuple(sorted(s.labels.items())), float(s.value))
        for family in text_string_to_metric_families(text)
        for s in family.samples
    )


def counter_delta(previous: Samples | None, current: Samples | None, name: str, **labels: str) -> float | None:
    """How much the counter `name` (summed over the series matching `labels`) grew between two
    scrapes; None when either scrape is missing. A series that went down was reset (its process
    restarted): it counts from zero. A series new in `current` counts from zero."""
    if previous is None or current is None:
        return None
    before: Mapping[Labels, float] = previous.series(name, **labels)
    grown = 0.0
    for key, value in current.series(name, **labels).items():
        was = before.get(key, 0.0)
        grown += value - was if value >= was else value
    return grown
