"""Concurrent writers: N clients, each a thread with a connection of its own, logging 1,000-point
batches to a run of its own for a stretch of time; the aggregate points/s and every request's
latency."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.clients import Point, Tracker

WRITERS = 8


@dataclass
class Writer:
    tracker: Tracker
    run_id: str
    next_step: int = 0


@dataclass
class Totals:
    latencies: list[float] = field(default_factory=list)
    points: int = 0
    wall_s: float = 0.0

    @property
    def points_per_s(self) -> float:
        return self.points / self.wall_s if self.wall_s else 0.0


def writers(make_tracker: Callable[[], Tracker], count: int = WRITERS) -> list[Writer]:
    """`count` clients, each with its own connection and a run of its own."""
    found = []
    for _ in range(count):
        tracker = make_tracker()
        experiment_id = tracker.create_experiment(f"bench-writers-{time.time_ns()}")
        found.append(Writer(tracker, tracker.create_run(experiment_id, "writer", {})))
    return found


def write_round(
    group: list[Writer],
    seconds: float,
    batch_points: int,
    totals: Totals,
    *,
    timed: bool = True,
    series: bool = False,
) -> None:
    """Every writer logs batch after batch until `seconds` have passed (at least one each);
    adds the latencies, points and wall time to `totals` (unless `timed` is off: a warm-up).
    `series`: each batch in the client's most compact shape (`Tracker.prepare_series`).

    A batch's points are built before its request is timed, as in the one-client benchmark."""
    start = threading.Barrier(len(group) + 1)
    lock = threading.Lock()
    errors: list[BaseException] = []

    def write(writer: Writer) -> None:
        prepare = writer.tracker.prepare_series if series else writer.tracker.prepare_batch
        start.wait()
        deadline = time.perf_counter() + seconds
        mine: list[float] = []
        try:
            while True:
                first = writer.next_step
                writer.next_step += batch_points
                now = time.time_ns() // 1_000_000
                points = [
                    Point("loss", 1 / (step + 1), step, now)
                    for step in range(first, first + batch_points)
                ]
                prepared = prepare(writer.run_id, points)
                began = time.perf_counter()
                writer.tracker.log_batch(prepared)
                finished = time.perf_counter()
                mine.append(finished - began)
                if finished >= deadline:
                    break
        except BaseException as error:  # reported by the caller, on its own thread
            errors.append(error)
        with lock:
            totals_add(mine)

    def totals_add(mine: list[float]) -> None:
        if timed:
            totals.latencies.extend(mine)
            totals.points += len(mine) * batch_points

    threads = [threading.Thread(target=write, args=(writer,)) for writer in group]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    if timed:
        totals.wall_s += time.perf_counter() - began
    if errors:
        raise errors[0]
