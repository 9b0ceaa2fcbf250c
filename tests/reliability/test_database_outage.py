"""PostgreSQL stopped under load for 10 s, then started again: calls fail fast with 503
UNAVAILABLE (never a hang, never a 500), health turns NOT_SERVING then SERVING, and the same
service process serves again (its pools reconnect) without losing an acknowledged write."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

from mlmesh_common.artifacts import LocalArtifactStore
from mlmesh_common.db import create_engine, database_error
from mlmesh_common.errors import Unavailable
from mlmesh_experiments.service import ExperimentsService
from mlmesh_experiments.storage.migrate import migrate
from mlmesh_experiments.storage.sql import SqlExperimentStore
from tests.reliability.conftest import wait_for
from tests.reliability.load import API, Ledger, Reader, Writer, check, percentile, registry_reads
from tests.reliability.report import statuses, table

SERVICE = "mlmesh.experiments.v1.ExperimentService"
OUTAGE_S = 10.0
WRITERS = 4


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms"


def test_postgres_stopped_under_load(start_mesh, faulty_postgres, reliability_report):
    mesh = start_mesh()
    client = mesh.client()
    experiment = client.post(mesh.base_url + API, json={}).json()
    runs = [
        client.post(f"{mesh.base_url}{API}/runs", json={"experiment_id": experiment["id"]}).json()
        for _ in range(WRITERS)
    ]
    seeded = client.post(
        f"{mesh.base_url}{API}/runs/{runs[0]['id']}/log-metrics", json={"metrics": {"seed": 1}}
    )
    assert seeded.ok, seeded.text
    pid = mesh.service.process.pid
    writes, reads, stop = Ledger(), Ledger(), threading.Event()
    writers = [
        Writer(i, mesh.base_url, mesh.tenant, experiment["id"], runs[i]["id"], writes, stop)
        for i in range(WRITERS)
    ]
    urls = registry_reads(mesh.base_url, experiment["id"], runs[0]["id"])
    reader = Reader(mesh.tenant, urls, reads, stop)
    for thread in (*writers, reader):
        thread.start()
    time.sleep(2)

    stopped_at = time.monotonic()
    faulty_postgres.stop_server("fast")
    not_serving_s = wait_for(
        lambda: mesh.service.health(SERVICE) == "NOT_SERVING", 10, "health NOT_SERVING"
    )
    # What a caller sees meanwhile: a JSON 503 naming the cause, with a retry hint.
    probe = client.get(f"{mesh.base_url}{API}/runs/{runs[0]['id']}", timeout=15)
    assert probe.status_code == 503, probe.text
    assert "DATABASE_UNAVAILABLE" in {d.get("reason") for d in probe.json()["details"]}
    assert probe.headers.get("retry-after") == "1"
    time.sleep(max(0.0, stopped_at + OUTAGE_S - time.monotonic()))

    started_at = time.monotonic()
    faulty_postgres.start_server()
    serving_s = wait_for(lambda: mesh.service.health(SERVICE) == "SERVING", 30, "health SERVING")
    wait_for(
        lambda: any(a.status == 200 and a.at >= started_at for a in reads.attempts),
        30,
        "a read served after the restart",
    )
    time.sleep(2)
    stop.set()
    for thread in (*writers, reader):
        thread.join(90)
    assert not any(thread.is_alive() for thread in (*writers, reader))

    assert mesh.service.process.poll() is None and mesh.service.process.pid == pid
    assert not writes.unexpected, writes.unexpected[:5]
    during = {**writes.statuses(stopped_at, started_at)}
    read_during = reads.statuses(stopped_at, started_at)
    # Inside the outage window every call failed 503 (a call that began just before the stop
    # may have completed): no 500, no hang.
    assert set(during) | set(read_during) <= {"200", "201", "503"}
    assert during.get("503", 0) > 0 and read_during.get("503", 0) > 0
    everything = {**writes.statuses(), **reads.statuses()}
    assert set(writes.statuses()) | set(reads.statuses()) <= {"200", "201", "503"}, everything
    result = check(mesh.base_url, mesh.tenant, experiment["id"], writers)
    assert result.unacknowledged == 0
    assert result.found == result.acknowledged > 0
    assert result.duplicated == 0 and result.partial == 0

    first_write = min(
        (
            a.at + a.latency_s
            for a in writes.attempts
            if a.status in (200, 201) and a.at >= started_at
        ),
        default=float("nan"),
    )
    unavailable = sorted(
        writes.latencies(503, stopped_at, started_at) + reads.latencies(503, stopped_at, started_at)
    )
    reliability_report.add(
        "database",
        f"""
## PostgreSQL stopped for {OUTAGE_S:g} s under load

{WRITERS} writers (log-batch of 50 points, log-metrics, create run, each retried under its
idempotency key until acknowledged) and one reader (run by id, metric history, run search)
through the gateway; PostgreSQL stopped with `pg_ctl stop -m fast`, started again
{OUTAGE_S:g} s later. The service process (pid unchanged) was never restarted.

{
            table(
                [
                    ("health NOT_SERVING after the stop", _ms(not_serving_s)),
                    (
                        "503 answers during the outage (after the gateway's 2 retries),"
                        " p50 / p99 / max",
                        " / ".join(_ms(percentile(unavailable, q)) for q in (50, 99, 100)),
                    ),
                    ("health SERVING after the start", _ms(serving_s)),
                    ("first acknowledged write after the start", _ms(first_write - started_at)),
                ],
                ("recovery", "time"),
            )
        }

Calls by status: writes {statuses(writes.statuses())}; reads {statuses(reads.statuses())};
during the outage: writes {statuses(during)}, reads {statuses(read_during)}.

Writes acknowledged {result.acknowledged:,} ({statuses(result.by_kind)}), found
{result.found:,}, duplicated {result.duplicated}, partial {result.partial}.
""",
    )


async def test_driver_statements_reconnect_after_a_restart(faulty_postgres):
    """The run-by-id fast path runs on asyncpg's own connection: after a restart, the call that
    finds its connection dead fails UNAVAILABLE and replaces the pool, and the next one reads
    again, with no SQLAlchemy statement (no health probe) in between."""
    database = faulty_postgres.create_database(f"rel_{uuid.uuid4().hex[:8]}")
    engine = create_engine(database.url("asyncpg"), pool_size=2)
    await migrate(engine)
    store = SqlExperimentStore(engine)
    try:
        service = ExperimentsService(store, LocalArtifactStore("/nonexistent"))
        experiment = await service.create_experiment("t", {})
        run = await service.create_run("t", experiment.id)
        # Both pooled connections in use once, so that both die with the server.
        await asyncio.gather(*(service.get_run("t", run.id) for _ in range(4)))
        faulty_postgres.stop_server("fast")
        faulty_postgres.start_server()
        failures = 0
        for _ in range(5):
            try:
                assert (await service.get_run("t", run.id)).id == run.id
                break
            except Exception as error:
                assert isinstance(database_error(error), Unavailable), repr(error)
                failures += 1
        else:
            raise AssertionError("the store never served again")
        assert failures <= 1
    finally:
        await store.close()
