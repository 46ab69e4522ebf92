"""Latency percentiles, histograms and throughput series. Pure: numbers in, numbers out.

Latencies are collected as integer nanoseconds (`time.perf_counter_ns` deltas) and reported in
milliseconds; completion times as float seconds since a phase started.
"""

from __future__ import annotations

import dataclasses
import math
from bisect import bisect_right
from collections.abc import Iterable, Sequence

NS_PER_MS = 1_000_000


@dataclasses.dataclass(frozen=True)
class Percentiles:
    """Nearest-rank percentiles of one sample, in milliseconds."""

    n: int
    p50: float
    p90: float
    p99: float
    max: float
    mean: float

    def __str__(self) -> str:
        return (f"p50 {self.p50:.3f} ms  p90 {self.p90:.3f} ms  p99 {self.p99:.3f} ms  "
                f"max {self.max:.3f} ms  (n={self.n}, mean {self.mean:.3f} ms)")

    def to_dict(self) -> dict[str, float | int]:
        return dataclasses.asdict(self)


def percentiles(samples_ns: Sequence[int]) -> Percentiles | None:
    """p50/p90/p99/max of `samples_ns`, None for no samples. Nearest rank (the sample at index
    floor(q * n)): a p99 of 100 samples is the slowest but one, never an interpolation."""
    if not samples_ns:
        return None
    ordered = sorted(samples_ns)
    n = len(ordered)

    def pick(q: float) -> float:
        return ordered[min(n - 1, int(q * n))] / NS_PER_MS

    return Percentiles(n=n, p50=pick(0.50), p90=pick(0.90), p99=pick(0.99), max=ordered[-1] / NS_PER_MS,
                       mean=sum(ordered) / n / NS_PER_MS)


def log_edges(low_ms: float = 0.1, high_ms: float = 100_000.0, per_decade: int = 10) -> list[float]:
    """Bucket edges spaced evenly on a log scale: latencies span microseconds to seconds."""
    if not 0 < low_ms < high_ms or per_decade < 1:
        raise ValueError(f"need 0 < low_ms < high_ms and per_decade >= 1, got {low_ms}, {high_ms}, {per_decade}")
    steps = math.ceil(math.log10(high_ms / low_ms) * per_decade)
    return [round(low_ms * 10 ** (i / per_decade), 6) for i in range(steps + 1)]


def histogram(samples_ms: Iterable[float], edges: Sequence[float]) -> list[int]:
    """Counts per bucket [edges[i], edges[i+1]); a sample below the first edge counts in the first
    bucket and one at or past the last edge in the last: nothing is dropped."""
    if len(edges) < 2:
        raise ValueError("a histogram needs at least two edges")
    counts = [0] * (len(edges) - 1)
    for value in samples_ms:
        index = bisect_right(edges, value) - 1
        counts[min(max(index, 0), len(counts) - 1)] += 1
    return counts


def throughput_series(completions_s: Iterable[float], step_s: float = 0.5) -> list[tuple[float, int]]:
    """Completions per `step_s` window, from 0 to the last completion: [(window start, count)].
    Empty windows are kept (a stall shows as zeros, not as a gap)."""
    if step_s <= 0:
        raise ValueError(f"step_s must be > 0, got {step_s}")
    times = [t for t in completions_s if t >= 0]
    if not times:
        return []
    counts = [0] * (int(max(times) // step_s) + 1)
    for t in times:
        counts[int(t // step_s)] += 1
    return [(round(i * step_s, 6), c) for i, c in enumerate(counts)]


def bucket_delta(before: dict[float, float], after: dict[float, float]) -> dict[float, float]:
    """The cumulative Prometheus histogram buckets ({le: count}) observed between two scrapes.
    A missing `before` bucket counts from zero (the series appeared in between)."""
    return {le: after[le] - before.get(le, 0.0) for le in after}


def bucket_quantile(buckets: dict[float, float], q: float) -> float | None:
    """The upper bound of the cumulative bucket that holds quantile `q` (+Inf when it is past the
    last finite bound): bucket resolution, never finer. None when no sample was observed."""
    if not 0 < q <= 1:
        raise ValueError(f"q must be in (0, 1], got {q}")
    ordered = sorted(buckets.items())
    total = ordered[-1][1] if ordered else 0.0
    if total <= 0:
        return None
    for le, cumulative in ordered:
        if cumulative >= q * total:
            return le
    return math.inf


def rate(count: int, elapsed_s: float) -> float:
    """count / elapsed, 0 for no time (a phase that did nothing)."""
    return count / elapsed_s if elapsed_s > 0 else 0.0


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, None when either is missing or the denominator is 0."""
    if numerator is None or not denominator:
        return None
    return numerator / denominator
