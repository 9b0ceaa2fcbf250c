"""Writers for the reliability tests: REST clients through the gateway that log batches, single
metrics and runs under idempotency keys, retry every call the service did not acknowledge, and
keep a ledger of what was acknowledged; and the checker that holds the registry to that ledger."""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field

import requests

from mlmesh_common.idempotency import IDEMPOTENCY_HEADER

API = "/api/v1/experiments"
# Answers that mean "not done, try again": overload, the gateway's own 502/503/504, UNAVAILABLE.
RETRYABLE = {429, 502, 503, 504}
CONNECTION_ERROR = "connection error"
POINTS_PER_BATCH = 50
# One writer's cycle of operations.
CYCLE = ("batch", "metrics", "batch", "run")


@dataclass
class Attempt:
    at: float
    status: int | str
    latency_s: float
    retry_after: str | None = None


@dataclass
class Operation:
    writer: int
    kind: str
    number: int
    acknowledged: bool = False
    attempts: int = 0


@dataclass
class Ledger:
    """What every writer sent and what the service acknowledged, shared by the writers."""

    attempts: list[Attempt] = field(default_factory=list)
    operations: list[Operation] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, attempt: Attempt) -> None:
        with self.lock:
            self.attempts.append(attempt)

    def statuses(self, start: float = 0.0, end: float = float("inf")) -> dict[str, int]:
        with self.lock:
            counts = collections.Counter(
                str(a.status) for a in self.attempts if start <= a.at < end
            )
        return dict(sorted(counts.items()))

    def latencies(self, status: int, start: float = 0.0, end: float = float("inf")) -> list[float]:
        with self.lock:
            return sorted(
                a.latency_s for a in self.attempts if a.status == status and start <= a.at < end
            )


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile of sorted `values` (0 for none)."""
    if not values:
        return 0.0
    rank = max(0, min(len(values) - 1, round(q / 100 * len(values) + 0.5) - 1))
    return values[rank]


class Writer(threading.Thread):
    """Cycles through CYCLE on its own run until `stop` is set, then finishes the operation in
    progress. Each operation is retried with its own idempotency key until it is acknowledged
    or `give_up_s` have passed."""

    def __init__(
        self,
        index: int,
        base_url: str,
        tenant: str,
        experiment_id: str,
        run_id: str,
        ledger: Ledger,
        stop: threading.Event,
        *,
        give_up_s: float = 60.0,
        pause_s: float = 0.0,
    ) -> None:
        super().__init__(name=f"writer-{index}", daemon=True)
        self.pause_s = pause_s
        self.index = index
        self.base_url = base_url
        self.experiment_id = experiment_id
        self.run_id = run_id
        self.ledger = ledger
        self.stop = stop
        self.give_up_s = give_up_s
        self.session = requests.Session()
        self.session.headers["x-tenant-id"] = tenant
        # A unique prefix per writer and test: keys are the tenant's for a day.
        self.prefix = f"{tenant}-w{index}"

    def run(self) -> None:
        numbers = collections.Counter()
        position = 0
        while not self.stop.is_set():
            kind = CYCLE[position % len(CYCLE)]
            position += 1
            operation = Operation(self.index, kind, numbers[kind])
            numbers[kind] += 1
            with self.ledger.lock:
                self.ledger.operations.append(operation)
            self._perform(operation)
            time.sleep(self.pause_s)

    def _request(self, operation: Operation) -> tuple[str, dict]:
        n, i = operation.number, self.index
        if operation.kind == "batch":
            metrics = [
                {"key": f"w{i}", "value": float(step), "step": step, "timestamp": 1}
                for step in range(n * POINTS_PER_BATCH, (n + 1) * POINTS_PER_BATCH)
            ]
            body: dict = {"metrics": metrics}
            if n % 2:  # every other batch also carries a param: the transactional path
                body["params"] = [{"key": f"b{n}", "value": str(n)}]
            return f"{API}/runs/{self.run_id}/log-batch", body
        if operation.kind == "metrics":
            return f"{API}/runs/{self.run_id}/log-metrics", {
                "metrics": {f"w{i}_single": float(n)},
                "step": n,
                "timestamp": 1,
            }
        return f"{API}/runs", {"experiment_id": self.experiment_id, "name": f"w{i}-r{n}"}

    def _perform(self, operation: Operation) -> None:
        path, body = self._request(operation)
        key = f"{self.prefix}-{operation.kind}-{operation.number}"
        deadline = time.monotonic() + self.give_up_s
        while time.monotonic() < deadline:
            operation.attempts += 1
            started = time.monotonic()
            try:
                response = self.session.post(
                    self.base_url + path, json=body, headers={IDEMPOTENCY_HEADER: key}, timeout=15
                )
            except requests.RequestException:
                self.ledger.record(Attempt(started, CONNECTION_ERROR, time.monotonic() - started))
                time.sleep(0.1)
                continue
            status = response.status_code
            retry_after = response.headers.get("retry-after")
            self.ledger.record(Attempt(started, status, time.monotonic() - started, retry_after))
            if status < 300:
                operation.acknowledged = True
                return
            if status not in RETRYABLE:
                with self.ledger.lock:
                    self.ledger.unexpected.append(f"{key}: {status} {response.text[:300]}")
                return
            # Honour the hint, capped so that a test's retries stay frequent.
            time.sleep(min(float(retry_after or 0.1), 0.25))


@dataclass(frozen=True)
class Check:
    """The registry against the writers' ledger."""

    acknowledged: int
    found: int
    duplicated: int
    partial: int
    unacknowledged: int
    unacknowledged_found: int
    by_kind: dict[str, int]


def check(base_url: str, tenant: str, experiment_id: str, writers: list[Writer]) -> Check:
    session = requests.Session()
    session.headers["x-tenant-id"] = tenant

    def get(path: str, **params) -> dict:
        response = session.get(base_url + path, params=params, timeout=30)
        response.raise_for_status()
        return response.json()

    def steps(run_id: str, key: str) -> collections.Counter:
        response = session.get(f"{base_url}{API}/runs/{run_id}/metrics/{key}/history", timeout=30)
        if response.status_code == 404:
            return collections.Counter()
        response.raise_for_status()
        return collections.Counter(int(p["step"]) for p in response.json()["points"])

    acknowledged = found = duplicated = partial = unacked = unacked_found = 0
    by_kind: collections.Counter = collections.Counter()
    run_names: collections.Counter = collections.Counter()
    offset, total = 0, 1
    while offset < total:
        page = get(f"{API}/runs", experiment_id=experiment_id, limit=1000, offset=offset)
        run_names.update(run["name"] for run in page["runs"])
        offset, total = offset + len(page["runs"]), page["total"]
    for writer in writers:
        i = writer.index
        batch_steps = steps(writer.run_id, f"w{i}")
        single_steps = steps(writer.run_id, f"w{i}_single")
        params = get(f"{API}/runs/{writer.run_id}")["params"]
        duplicated += sum(count - 1 for count in batch_steps.values() if count > 1)
        duplicated += sum(count - 1 for count in single_steps.values() if count > 1)
        for operation in writer.ledger.operations:
            if operation.writer != i:
                continue
            n = operation.number
            if operation.kind == "batch":
                wanted = range(n * POINTS_PER_BATCH, (n + 1) * POINTS_PER_BATCH)
                present = sum(1 for step in wanted if batch_steps[step])
                param_present = f"b{n}" in params
                whole = present == POINTS_PER_BATCH and (param_present or n % 2 == 0)
                none = present == 0 and not param_present
                partial += not (whole or none)
                there = whole
            elif operation.kind == "metrics":
                there = single_steps[n] > 0
            else:
                copies = run_names[f"w{i}-r{n}"]
                duplicated += max(0, copies - 1)
                there = copies > 0
            by_kind[operation.kind] += operation.acknowledged
            if operation.acknowledged:
                acknowledged += 1
                found += there
            else:
                unacked += 1
                unacked_found += there
    return Check(acknowledged, found, duplicated, partial, unacked, unacked_found, dict(by_kind))


def registry_reads(base_url: str, experiment_id: str, run_id: str) -> list[str]:
    """A run by id and its metric `seed` (statements the experiments service runs on the
    driver's connection directly) and a run search (its search pool)."""
    return [
        f"{base_url}{API}/runs/{run_id}",
        f"{base_url}{API}/runs/{run_id}/metrics/seed/history",
        f"{base_url}{API}/runs?experiment_id={experiment_id}&limit=5",
    ]


class Reader(threading.Thread):
    """GETs `urls` in turn until `stop`, each answer's status in the ledger."""

    def __init__(self, tenant: str, urls: list[str], ledger: Ledger, stop) -> None:
        super().__init__(name="reader", daemon=True)
        self.ledger = ledger
        self.stop = stop
        self.session = requests.Session()
        self.session.headers["x-tenant-id"] = tenant
        self.urls = urls

    def run(self) -> None:
        position = 0
        while not self.stop.is_set():
            url = self.urls[position % len(self.urls)]
            position += 1
            started = time.monotonic()
            try:
                status: int | str = self.session.get(url, timeout=15).status_code
            except requests.RequestException:
                status = CONNECTION_ERROR
            self.ledger.record(Attempt(started, status, time.monotonic() - started))
            if status != 200:
                time.sleep(0.05)
