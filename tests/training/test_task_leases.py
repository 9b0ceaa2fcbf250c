"""Task leases between replicas (tasks.py), with TaskRunners sharing one store (in memory and a
real SQLite file) and short leases: a replica that stops renewing is taken over by another, a
graceful stop hands its tasks over, a replica that lost its lease stops its own work and writes
nothing more, a task cancelled on one replica stops on the one running it, and a task that keeps
losing its replica is FAILED after its last attempt."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from mlmesh_common.db import create_engine
from mlmesh_common.resources import now_ms
from mlmesh_training.storage.memory import InMemoryTrainingStore
from mlmesh_training.storage.migrate import migrate
from mlmesh_training.storage.sql import SqlTrainingStore
from mlmesh_training.tasks import Leases, TaskRunner

LEASE_S, HEARTBEAT_S, SCAN_S = 0.6, 0.2, 0.1


@pytest.fixture(params=["memory", "sqlite"])
async def store(request, tmp_path):
    if request.param == "memory":
        store = InMemoryTrainingStore()
    else:
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'training.db'}")
        await migrate(engine)
        store = SqlTrainingStore(engine)
    yield store
    await store.close()


class Ledger:
    """Which replica ran which task when: the test's own record, to check that no task ever ran
    on two replicas at once."""

    def __init__(self) -> None:
        self.spans: dict[str, list[tuple[str, float, float | None]]] = {}

    def work(self, owner: str, seconds: float, key: str = "t"):
        async def work(progress):
            spans = self.spans.setdefault(key, [])
            spans.append((owner, time.monotonic(), None))
            index = len(spans) - 1
            try:
                await progress(0, 1, owner)
                await asyncio.sleep(seconds)
                return {"ran_on": owner}
            finally:
                spans[index] = (owner, spans[index][1], time.monotonic())

        return work

    def overlapping(self, key: str = "t") -> bool:
        spans = sorted(self.spans.get(key, []), key=lambda s: s[1])
        return any(b[1] < a[2] for a, b in itertools.pairwise(spans))


def runner(store, name: str, ledger: Ledger, seconds: float, max_attempts: int = 3) -> TaskRunner:
    leases = Leases(name, LEASE_S, HEARTBEAT_S, SCAN_S, max_attempts)
    tasks = TaskRunner(store, now_ms, leases)

    async def resume(task):
        return ledger.work(name, seconds)

    tasks.start(resume)
    return tasks


async def settled(store, task_id: str, timeout_s: float = 20):
    deadline = time.monotonic() + timeout_s
    while (task := await store.get_task(task_id)).status in ("PENDING", "RUNNING"):
        assert time.monotonic() < deadline, task
        await asyncio.sleep(0.05)
    return task


async def started(ledger: Ledger, runs: int, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while len(ledger.spans.get("t", [])) < runs:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.05)  # past its progress write


def crash(tasks: TaskRunner) -> None:
    """Stops a runner as SIGKILL would: no handover, no more heartbeats or writes."""
    for loop in tasks._loops:
        loop.cancel()
    tasks._lost.update(tasks._running)
    for running in tasks._running.values():
        running.cancel()


async def test_a_dead_replicas_task_is_taken_over_once(store):
    ledger = Ledger()
    a = runner(store, "a", ledger, seconds=30)
    b = runner(store, "b", ledger, seconds=0.2)
    task = await a.submit("acme", "train", {}, ledger.work("a", 30))
    await started(ledger, 1)
    crash(a)
    done = await settled(store, task.id)
    assert (done.status, done.owner, done.attempt, done.result) == (
        "SUCCEEDED",
        "b",
        2,
        {"ran_on": "b"},
    )
    assert [s[0] for s in ledger.spans["t"]] == ["a", "b"]
    assert not ledger.overlapping()
    await b.shutdown()


async def test_a_graceful_stop_hands_the_task_over(store):
    ledger = Ledger()
    a = runner(store, "a", ledger, seconds=30)
    task = await a.submit("acme", "tune", {}, ledger.work("a", 30))
    await started(ledger, 1)
    await a.shutdown()
    handed = await store.get_task(task.id)
    assert (handed.status, handed.owner, handed.lease_expires_at) == ("RUNNING", "a", 0)
    assert handed.error is None
    # The next replica (or this one restarted) claims it at its first scan, lease or not.
    b = runner(store, "b", ledger, seconds=0.1)
    done = await settled(store, task.id)
    assert (done.status, done.owner, done.attempt) == ("SUCCEEDED", "b", 2)
    assert not ledger.overlapping()
    await b.shutdown()


async def test_a_draining_replica_claims_nothing(store):
    """Between its SIGTERM and its stop a replica keeps its own tasks but claims no other: a
    task it claimed then would only be handed over again when it stops."""
    ledger = Ledger()
    a = runner(store, "a", ledger, seconds=30)
    draining = runner(store, "draining", ledger, seconds=0.1)
    draining.stop_taking_over()
    task = await a.submit("acme", "train", {}, ledger.work("a", 30))
    await started(ledger, 1)
    crash(a)
    await asyncio.sleep(LEASE_S + 5 * SCAN_S)  # lapsed, and scanned several times since
    assert await draining.take_over() == 0
    lapsed = await store.get_task(task.id)
    assert (lapsed.status, lapsed.owner, lapsed.attempt) == ("RUNNING", "a", 1)
    b = runner(store, "b", ledger, seconds=0.1)
    done = await settled(store, task.id)
    assert (done.status, done.owner, done.attempt) == ("SUCCEEDED", "b", 2)
    await draining.shutdown()
    await b.shutdown()


async def test_a_replica_that_lost_its_lease_stops_and_writes_nothing(store):
    ledger = Ledger()
    a = runner(store, "a", ledger, seconds=30)
    task = await a.submit("acme", "train", {}, ledger.work("a", 30))
    await started(ledger, 1)
    # Another replica took it over (as after a partition that outlasted the lease).
    assert await store.update_task(task.id, {"lease_expires_at": 0})
    stolen = await store.get_task(task.id)
    assert await store.claim_task(task.id, stolen.attempt, "b", now_ms(), now_ms() + 60_000)
    deadline = time.monotonic() + 10
    while ledger.spans["t"][0][2] is None:  # a's work is stopped at its next heartbeat
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    await asyncio.sleep(HEARTBEAT_S)
    after = await store.get_task(task.id)
    assert (after.status, after.owner, after.progress_message) == ("RUNNING", "b", "a")
    await a.shutdown()


async def test_a_task_cancelled_elsewhere_stops_where_it_runs(store):
    ledger = Ledger()
    a = runner(store, "a", ledger, seconds=30)
    b = runner(store, "b", ledger, seconds=30)
    task = await a.submit("acme", "train", {}, ledger.work("a", 30))
    await started(ledger, 1)
    cancelled = await b.cancel("acme", task.id)
    assert cancelled.status == "CANCELLED"
    deadline = time.monotonic() + 10
    while ledger.spans["t"][0][2] is None:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    assert (await store.get_task(task.id)).status == "CANCELLED"
    assert len(ledger.spans["t"]) == 1
    await a.shutdown()
    await b.shutdown()


async def test_a_task_that_keeps_losing_its_replica_fails_after_its_last_attempt(store):
    ledger = Ledger()
    first = runner(store, "r1", ledger, seconds=30, max_attempts=2)
    task = await first.submit("acme", "automl", {}, ledger.work("r1", 30))
    await started(ledger, 1)
    crash(first)
    second = runner(store, "r2", ledger, seconds=30, max_attempts=2)
    await started(ledger, 2)
    crash(second)
    third = runner(store, "r3", ledger, seconds=0.1, max_attempts=2)
    done = await settled(store, task.id)
    assert done.status == "FAILED" and done.attempt == 3
    assert done.error["details"][0]["reason"] == "TASK_ATTEMPTS_EXHAUSTED"
    assert "r3" not in [s[0] for s in ledger.spans.get("t", [])]
    await third.shutdown()
