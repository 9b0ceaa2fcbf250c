"""Acknowledged means durable: 8 writers under load, the experiments service SIGKILLed and
started again, every writer retrying under its idempotency keys. Every acknowledged write is
there, in full and once; no write is there in part."""

from __future__ import annotations

import threading
import time

from tests.reliability.conftest import wait_for
from tests.reliability.load import API, Ledger, Writer, check
from tests.reliability.report import statuses, table

WRITERS = 8
LOAD_BEFORE_S = 2.0
LOAD_AFTER_S = 2.0
KILLS = 2


def test_sigkill_under_eight_writers(start_mesh, reliability_report):
    mesh = start_mesh()
    client = mesh.client()
    experiment = client.post(mesh.base_url + API, json={}).json()
    runs = [
        client.post(f"{mesh.base_url}{API}/runs", json={"experiment_id": experiment["id"]}).json()
        for _ in range(WRITERS)
    ]
    ledger, stop = Ledger(), threading.Event()
    writers = [
        Writer(i, mesh.base_url, mesh.tenant, experiment["id"], runs[i]["id"], ledger, stop)
        for i in range(WRITERS)
    ]
    for writer in writers:
        writer.start()
    recoveries = []
    for _ in range(KILLS):
        time.sleep(LOAD_BEFORE_S)
        killed_at = time.monotonic()
        acknowledged_before = sum(o.acknowledged for o in ledger.operations)
        assert mesh.service.kill() == -9
        mesh.service.start()
        serving_s = time.monotonic() - killed_at
        first_ack_s = wait_for(
            lambda at=killed_at + serving_s: any(
                a.status in (200, 201) and a.at >= at for a in ledger.attempts
            ),
            30,
            "a write acknowledged after the restart",
        )
        recoveries.append((acknowledged_before, serving_s, serving_s + first_ack_s))
    time.sleep(LOAD_AFTER_S)
    stop.set()
    for writer in writers:
        writer.join(90)
    assert not any(writer.is_alive() for writer in writers)

    assert not ledger.unexpected, ledger.unexpected[:5]
    result = check(mesh.base_url, mesh.tenant, experiment["id"], writers)
    # Writers retried until acknowledged: nothing was left unacknowledged.
    assert result.unacknowledged == 0
    assert result.acknowledged > 0 and result.found == result.acknowledged
    assert result.duplicated == 0
    assert result.partial == 0
    calls = ledger.statuses()
    assert set(calls) <= {"200", "201", "503", "connection error"}, calls
    retried = sum(o.attempts - 1 for o in ledger.operations)

    reliability_report.add(
        "kill",
        f"""
## SIGKILL of the experiments service under {WRITERS} writers

{WRITERS} writers through the gateway, each on its own run, cycling log-batch (50 points; every
other batch also logs a param, the transactional path), log-metrics, log-batch and create run,
every call under its own `x-idempotency-key` and retried (same key) until acknowledged. The
service was SIGKILLed {KILLS} times, {LOAD_BEFORE_S:g} s of load apart, and started again at once
on the same port (the gateway's cluster unchanged).

{
            table(
                [
                    (n + 1, f"{before:,}", f"{serving * 1000:,.0f} ms", f"{ack * 1000:,.0f} ms")
                    for n, (before, serving, ack) in enumerate(recoveries)
                ],
                (
                    "kill",
                    "writes acknowledged before it",
                    "serving again after",
                    "first write acknowledged after",
                ),
            )
        }

| writes | count |
|---|---|
| acknowledged | {result.acknowledged:,} ({statuses(result.by_kind)}) |
| found | {result.found:,} |
| duplicated | {result.duplicated} |
| partial | {result.partial} |
| retried calls (same key) | {retried:,} |

Calls by status: {statuses(calls)}. The checker reads every writer's metric histories (each
batch's 50 steps present once, or not at all), its run's params, and the experiment's runs by
name (each acknowledged create once).
""",
    )
