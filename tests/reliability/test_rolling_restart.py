"""Rolling restart under load: two experiments replicas on one database behind the gateway's one
cluster, restarted one after the other with SIGTERM while writers write. Each replica turns
NOT_SERVING first and keeps serving while the gateway takes it out of rotation, then drains;
the gateway retries reads and keyed writes on the other replica. No acknowledged write is lost
or duplicated, and no call fails with anything but a (retried) 503."""

from __future__ import annotations

import threading
import time

from tests.reliability.conftest import wait_for
from tests.reliability.load import API, Ledger, Reader, Writer, check
from tests.reliability.report import statuses, table

SERVICE = "mlmesh.experiments.v1.ExperimentService"
WRITERS = 3
DRAIN_DELAY_S = 2.0
# Writers pause between calls: the load leaves the restarting replica CPU to start on 2 cores.
PAUSE_S = 0.05


def test_rolling_restart_under_load(start_mesh, reliability_report):
    mesh = start_mesh(replicas=2, MLMESH_EXPERIMENTS_DRAIN_DELAY_S=str(DRAIN_DELAY_S))
    wait_for(lambda: all(mesh.in_rotation(s) for s in mesh.services), 30, "both in rotation")
    client = mesh.client()
    experiment = client.post(mesh.base_url + API, json={}).json()
    runs = [
        client.post(f"{mesh.base_url}{API}/runs", json={"experiment_id": experiment["id"]}).json()
        for _ in range(WRITERS)
    ]
    seeded = client.post(
        f"{mesh.base_url}{API}/runs/{runs[0]['id']}/log-metrics", json={"metrics": {"seed": 1}}
    )
    assert seeded.ok
    writes, reads, stop = Ledger(), Ledger(), threading.Event()
    writers = [
        Writer(
            i,
            mesh.base_url,
            mesh.tenant,
            experiment["id"],
            runs[i]["id"],
            writes,
            stop,
            pause_s=PAUSE_S,
        )
        for i in range(WRITERS)
    ]
    reader = Reader(mesh.base_url, mesh.tenant, experiment["id"], runs[0]["id"], reads, stop)
    for thread in (*writers, reader):
        thread.start()
    time.sleep(1.5)

    steps = []
    for replica in mesh.services:
        signalled = time.monotonic()
        replica.process.terminate()
        not_serving_s = wait_for(
            lambda r=replica: r.health(SERVICE) in ("NOT_SERVING", "UNREACHABLE"),
            5,
            "NOT_SERVING after SIGTERM",
        )
        out_s = wait_for(lambda r=replica: not mesh.in_rotation(r), 30, "out of rotation")
        assert replica.process.wait(60) == 0
        exited_s = time.monotonic() - signalled
        replica.start()
        wait_for(lambda r=replica: mesh.in_rotation(r), 30, "back in rotation")
        back_s = time.monotonic() - signalled
        steps.append((replica.address, not_serving_s, out_s, exited_s, back_s))
        time.sleep(1)
    stop.set()
    for thread in (*writers, reader):
        thread.join(90)
    assert not any(thread.is_alive() for thread in (*writers, reader))

    assert not writes.unexpected, writes.unexpected[:5]
    result = check(mesh.base_url, mesh.tenant, experiment["id"], writers)
    assert result.unacknowledged == 0
    assert result.acknowledged > 0 and result.found == result.acknowledged
    assert result.duplicated == 0 and result.partial == 0
    write_calls, read_calls = writes.statuses(), reads.statuses()
    assert set(write_calls) | set(read_calls) <= {"200", "201", "503"}, (write_calls, read_calls)

    reliability_report.add(
        "rolling",
        f"""
## Rolling restart under load

Two replicas of the experiments service on one database, in the gateway's one cluster;
{WRITERS} writers and a reader as in the PostgreSQL test. Each replica in turn got SIGTERM
(`MLMESH_EXPERIMENTS_DRAIN_DELAY_S={DRAIN_DELAY_S:g}`: health NOT_SERVING at once, calls still
served for that long, then in-flight calls drained), and was started again once it had exited;
the next one only once the gateway had the first back in rotation. The gateway retries reads
and writes carrying an idempotency key on UNAVAILABLE or a reset, on the other replica.

{
            table(
                [
                    (
                        address,
                        f"{ns * 1000:,.0f} ms",
                        f"{out * 1000:,.0f} ms",
                        f"{ex * 1000:,.0f} ms",
                        f"{back * 1000:,.0f} ms",
                    )
                    for address, ns, out, ex, back in steps
                ],
                ("replica", "NOT_SERVING", "out of rotation", "exited", "back in rotation"),
            )
        }

(Times from the SIGTERM.) Calls by status: writes {statuses(write_calls)}; reads
{statuses(read_calls)}. Writes acknowledged {result.acknowledged:,}, found {result.found:,},
duplicated {result.duplicated}, partial {result.partial}.
""",
    )
