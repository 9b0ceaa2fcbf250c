"""Timing of one client call at a time: warm-up, a sample budget, percentiles, throughput."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Budget:
    """At most `iterations` timed calls, and no more than `seconds` of them once `minimum` are
    in: slow operations still get a usable sample without blowing the run's time limit."""

    iterations: int
    seconds: float
    minimum: int = 5
    warmup: int = 3

    def calls_needed(self) -> int:
        """Every call index `sample` may pass, warm-up included (for data prepared upfront)."""
        return self.warmup + self.iterations


@dataclass(frozen=True)
class Stats:
    count: int
    p50_ms: float
    p95_ms: float
    mean_ms: float
    # Points per second over the timed calls, for the logging operations only.
    points_per_s: float | None = None


def warm_up(call: Callable[[int], object], budget: Budget) -> None:
    """The untimed first calls: connections, caches and prepared statements get set up."""
    for i in range(budget.warmup):
        call(i)


def sample(call: Callable[[int], object], budget: Budget) -> list[float]:
    """Latencies (seconds) of `call(i)` for the indexes after the warm-up ones, so every call
    sees fresh data (a new step, a new run) when the caller indexes by `i`."""
    return sample_span(call, Span(budget.warmup, budget.iterations, budget.seconds, budget.minimum))


@dataclass(frozen=True)
class Span:
    """One stretch of timed calls: indexes `first`..`first + count - 1`, no more than `seconds`
    of them once `minimum` are in."""

    first: int
    count: int
    seconds: float
    minimum: int


def rounds(budget: Budget, count: int) -> list[Span]:
    """The budget cut into `count` rounds (consecutive indexes, a share of the time and of the
    minimum each), so that several systems can take turns and drift on the machine hits all
    alike."""
    per_round = -(-budget.iterations // count)
    minimum = -(-budget.minimum // count)
    spans, first = [], budget.warmup
    for _ in range(count):
        size = min(per_round, budget.calls_needed() - first)
        if size <= 0:
            break
        spans.append(Span(first, size, budget.seconds / count, minimum))
        first += size
    return spans


def sample_span(call: Callable[[int], object], span: Span) -> list[float]:
    latencies: list[float] = []
    deadline = time.perf_counter() + span.seconds
    for i in range(span.first, span.first + span.count):
        started = time.perf_counter()
        call(i)
        finished = time.perf_counter()
        latencies.append(finished - started)
        if finished > deadline and len(latencies) >= span.minimum:
            break
    return latencies


def percentile(latencies: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), in the input's unit."""
    ordered = sorted(latencies)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize(latencies: list[float], points_per_call: int = 0) -> Stats:
    throughput = points_per_call * len(latencies) / sum(latencies) if points_per_call else None
    return Stats(
        count=len(latencies),
        p50_ms=percentile(latencies, 50) * 1000,
        p95_ms=percentile(latencies, 95) * 1000,
        mean_ms=statistics.fmean(latencies) * 1000,
        points_per_s=throughput,
    )
