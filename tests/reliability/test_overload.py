"""Overload is refused, not queued: beyond its in-flight limit, or when its database pool stays
full past the pool timeout, the service answers RESOURCE_EXHAUSTED (429 with Retry-After and a
RetryInfo detail); the gateway's per-tenant rate limit refuses a tenant's excess calls, and only
that tenant's. Latencies are reported, never asserted."""

from __future__ import annotations

import collections
import concurrent.futures
import threading
import time

import requests

from tests.reliability.load import API, percentile
from tests.reliability.report import statuses, table

CLIENTS = 12
DURATION_S = 2.0
POINTS = 200


def _hammer(mesh, path: str, body: dict, clients: int, duration_s: float):
    """`clients` threads POSTing `body` for `duration_s`: status counts, latencies by status,
    and the reasons and Retry-After headers of the refusals."""
    counts: collections.Counter = collections.Counter()
    latencies: dict[int, list[float]] = collections.defaultdict(list)
    reasons: collections.Counter = collections.Counter()
    retry_after: collections.Counter = collections.Counter()
    lock = threading.Lock()
    deadline = time.monotonic() + duration_s

    def client() -> None:
        session = mesh.client()
        while time.monotonic() < deadline:
            started = time.monotonic()
            response = session.post(mesh.base_url + path, json=body, timeout=30)
            elapsed = time.monotonic() - started
            with lock:
                counts[response.status_code] += 1
                latencies[response.status_code].append(elapsed)
                if response.status_code == 429:
                    details = response.json().get("details", [])
                    reasons.update(d["reason"] for d in details if "reason" in d)
                    retry_after[response.headers.get("retry-after")] += 1
                    has_retry_info = any(d["@type"].endswith("RetryInfo") for d in details)
                    reasons["with RetryInfo"] += has_retry_info

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client) for _ in range(clients)]:
            future.result()
    return counts, {k: sorted(v) for k, v in latencies.items()}, reasons, retry_after


def _batch_target(mesh) -> tuple[str, dict]:
    client = mesh.client()
    experiment = client.post(mesh.base_url + API, json={}).json()
    run = client.post(f"{mesh.base_url}{API}/runs", json={"experiment_id": experiment["id"]})
    body = {"metrics": [{"key": "m", "value": 0.5, "step": s} for s in range(POINTS)]}
    return f"{API}/runs/{run.json()['id']}/log-batch", body


def _ms(values: list[float], q: float) -> str:
    return f"{percentile(values, q) * 1000:,.1f} ms" if values else "-"


def test_in_flight_limit_and_pool_timeout(start_mesh, reliability_report):
    rows = []
    results = {}
    for label, env in (
        ("no limit", {}),
        ("max_in_flight=2", {"MLMESH_EXPERIMENTS_MAX_IN_FLIGHT": "2"}),
        (
            "pool of 1+1 connections, 20 ms pool timeout",
            {
                "MLMESH_EXPERIMENTS_DATABASE_POOL_SIZE": "1",
                "MLMESH_EXPERIMENTS_DATABASE_POOL_TIMEOUT_S": "0.02",
            },
        ),
    ):
        mesh = start_mesh(**env)
        path, body = _batch_target(mesh)
        counts, latencies, reasons, retry_after = _hammer(mesh, path, body, CLIENTS, DURATION_S)
        results[label] = counts, reasons, retry_after
        ok = latencies.get(200, [])
        rows.append(
            (
                label,
                statuses({str(k): v for k, v in sorted(counts.items())}),
                _ms(ok, 50),
                _ms(ok, 99),
                _ms(latencies.get(429, []), 99),
            )
        )
        assert set(counts) <= {200, 429}, counts

    unlimited, limited, pooled = results.values()
    assert unlimited[0][429] == 0
    for counts, reasons, retry_after in (limited, pooled):
        assert counts[200] > 0 and counts[429] > 0
        assert set(retry_after) == {"1"}
        assert reasons["with RetryInfo"] == counts[429]
    assert limited[1]["TOO_MANY_REQUESTS_IN_FLIGHT"] == limited[0][429]
    assert pooled[1]["DATABASE_POOL_EXHAUSTED"] == pooled[0][429]

    reliability_report.add(
        "overload",
        f"""
## Overload: in-flight limit and pool timeout

{CLIENTS} clients through the gateway, each POSTing log-batches of {POINTS} points to one run
back to back for {DURATION_S:g} s, against three service processes: without a limit, with
`MLMESH_EXPERIMENTS_MAX_IN_FLIGHT=2`, and with a database pool of one connection (plus one
overflow) and a 20 ms pool timeout. Refusals are 429 RESOURCE_EXHAUSTED with `Retry-After: 1`
and a `google.rpc.RetryInfo` detail.

{table(rows, ("service", "calls by status", "200 p50", "200 p99", "429 p99"))}
""",
    )


def test_gateway_rate_limit_per_tenant(start_mesh, reliability_report):
    rate = 20
    mesh = start_mesh(gateway_settings={"rate_limit_rps": rate})
    other = mesh.client()
    other.headers["x-tenant-id"] = mesh.tenant + "-b"
    path = f"{API}?limit=1"
    noisy = mesh.client()
    started = time.monotonic()
    noisy_counts: collections.Counter = collections.Counter()
    refusal = None
    for _ in range(100):
        response = noisy.get(mesh.base_url + path, timeout=10)
        noisy_counts[response.status_code] += 1
        if response.status_code == 429:
            refusal = response
    elapsed = time.monotonic() - started
    quiet_counts = collections.Counter(
        other.get(mesh.base_url + path, timeout=10).status_code for _ in range(rate // 2)
    )
    # Calls without a tenant header share the default tenant's bucket.
    anonymous = requests.get(mesh.base_url + path, timeout=10)
    # /healthz answers 503 here (the other domains are not running), never 429.
    health = collections.Counter(
        noisy.get(mesh.base_url + "/healthz", timeout=10).status_code for _ in range(rate * 2)
    )

    assert set(noisy_counts) == {200, 429}
    # The bucket holds `rate` tokens and refills `rate` a second.
    assert noisy_counts[200] <= rate + rate * elapsed + 1
    assert refusal is not None and refusal.headers["retry-after"] == "1"
    assert refusal.json()["details"][0]["reason"] == "RATE_LIMITED"
    assert quiet_counts == {200: rate // 2}
    assert anonymous.status_code == 200 and 429 not in health

    noisy_statuses = statuses({str(k): v for k, v in sorted(noisy_counts.items())})
    quiet_statuses = statuses({str(k): v for k, v in quiet_counts.items()})
    reliability_report.add(
        "rate_limit",
        f"""
## Gateway rate limit per tenant

`MLMESH_GATEWAY_RATE_LIMIT_RPS={rate}` (off by default): one tenant sent 100 list calls back to
back in {elapsed * 1000:,.0f} ms and got {noisy_statuses}
(JSON `google.rpc.Status`, reason `RATE_LIMITED`, `Retry-After: 1`); another tenant, right
after, sent {rate // 2} and got {quiet_statuses}. `/healthz` is
never limited.
""",
    )
