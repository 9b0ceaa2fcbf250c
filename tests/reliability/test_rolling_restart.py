"""Rolling restart under load: two replicas of a service behind the gateway's one cluster,
restarted one after the other with SIGTERM while clients call. Each replica turns NOT_SERVING
first and keeps serving while the gateway takes it out of rotation, then drains; the gateway
retries reads and keyed writes on the other replica. No call fails with anything but a
(retried) 503, and no acknowledged write is lost or duplicated.

The experiments service's replicas share one database and take the writes; the tracking
service's replicas (a read-only façade) serve reads of an MLflow server that clients write to
meanwhile, and every write MLflow acknowledged reads back through them afterwards."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import requests
from mlflow.tracking import MlflowClient

from mlmesh.experiments.v1 import experiments_service_pb2
from mlmesh.tracking.v1 import tracking_service_pb2
from tests.reliability.conftest import Mesh, wait_for
from tests.reliability.load import API, Ledger, Reader, Writer, check, registry_reads
from tests.reliability.report import statuses, table

WRITERS = 3
DRAIN_DELAY_S = 2.0
# Writers pause between calls: the load leaves the restarting replica CPU to start on 2 cores.
PAUSE_S = 0.05
TRACKING = "/api/v1/tracking"


def _service_name(module) -> str:
    (name,) = module.DESCRIPTOR.services_by_name
    return f"{module.DESCRIPTOR.package}.{name}"


@dataclass(frozen=True)
class Step:
    """One replica's restart, in seconds from its SIGTERM."""

    address: str
    not_serving_s: float
    out_of_rotation_s: float
    exited_s: float
    back_s: float


def restart_one_by_one(mesh: Mesh, service: str) -> list[Step]:
    """SIGTERM each replica in turn: NOT_SERVING at once, out of the gateway's rotation, a
    clean exit; started again, and the next one only once this one is back in rotation."""
    steps = []
    for replica in mesh.services:
        signalled = time.monotonic()
        replica.process.terminate()
        # Still answering, and saying it is going: not gone at once.
        not_serving_s = wait_for(
            lambda r=replica: r.health(service) == "NOT_SERVING", 5, "NOT_SERVING after SIGTERM"
        )
        out_s = wait_for(lambda r=replica: not mesh.in_rotation(r), 30, "out of rotation")
        assert replica.process.wait(60) == 0
        exited_s = time.monotonic() - signalled
        replica.start()
        wait_for(lambda r=replica: mesh.in_rotation(r), 30, "back in rotation")
        steps.append(
            Step(replica.address, not_serving_s, out_s, exited_s, time.monotonic() - signalled)
        )
        time.sleep(1)
    return steps


def steps_table(steps: list[Step]) -> str:
    def ms(seconds: float) -> str:
        return f"{seconds * 1000:,.0f} ms"

    return table(
        [
            (s.address, ms(s.not_serving_s), ms(s.out_of_rotation_s), ms(s.exited_s), ms(s.back_s))
            for s in steps
        ],
        ("replica", "NOT_SERVING", "out of rotation", "exited", "back in rotation"),
    )


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
    urls = registry_reads(mesh.base_url, experiment["id"], runs[0]["id"])
    reader = Reader(mesh.tenant, urls, reads, stop)
    for thread in (*writers, reader):
        thread.start()
    time.sleep(1.5)

    steps = restart_one_by_one(mesh, _service_name(experiments_service_pb2))
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

{steps_table(steps)}

(Times from the SIGTERM.) Calls by status: writes {statuses(write_calls)}; reads
{statuses(read_calls)}. Writes acknowledged {result.acknowledged:,}, found {result.found:,},
duplicated {result.duplicated}, partial {result.partial}.
""",
    )


class MlflowWriter(threading.Thread):
    """Logs one metric point after another to an MLflow run, straight to the MLflow server,
    until `stop`; the steps MLflow acknowledged are the ledger."""

    def __init__(self, tracking_uri: str, run_id: str, stop: threading.Event) -> None:
        super().__init__(name="mlflow-writer", daemon=True)
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.run_id = run_id
        self.stop = stop
        self.acknowledged: list[int] = []

    def run(self) -> None:
        step = 0
        while not self.stop.is_set():
            self.client.log_metric(self.run_id, "pnl", float(step), step=step)
            self.acknowledged.append(step)
            step += 1
            time.sleep(PAUSE_S)


def test_rolling_restart_of_tracking_under_load(start_mesh, mlflow_server, reliability_report):
    client = MlflowClient(tracking_uri=mlflow_server.url)
    name = f"rolling-{time.time_ns()}"
    experiment_id = client.create_experiment(name)
    mesh = start_mesh(
        replicas=2,
        domain="tracking",
        MLFLOW_TRACKING_URI=mlflow_server.url,
        MLMESH_TRACKING_EXPERIMENTS=name,
        MLMESH_TRACKING_DRAIN_DELAY_S=str(DRAIN_DELAY_S),
    )
    wait_for(lambda: all(mesh.in_rotation(s) for s in mesh.services), 30, "both in rotation")
    run_id = client.create_run(experiment_id, tags={"mlmesh.tenant": mesh.tenant}).info.run_id
    base = f"{mesh.base_url}{TRACKING}"
    urls = [
        f"{base}/runs?experiment_id={experiment_id}",
        f"{base}/runs/{run_id}",
        f"{base}/runs/{run_id}/metrics",
        f"{base}/runs/{run_id}/metrics/pnl/history?max_points=100",
        f"{base}/experiments",
    ]
    reads, stop = Ledger(), threading.Event()
    readers = [Reader(mesh.tenant, urls[n:] + urls[:n], reads, stop) for n in range(2)]
    writer = MlflowWriter(mlflow_server.url, run_id, stop)
    for thread in (writer, *readers):
        thread.start()
    time.sleep(1.5)

    steps = restart_one_by_one(mesh, _service_name(tracking_service_pb2))
    stop.set()
    for thread in (writer, *readers):
        thread.join(90)
    assert not any(thread.is_alive() for thread in (writer, *readers))

    read_calls = reads.statuses()
    assert set(read_calls) <= {"200", "503"}, read_calls
    assert read_calls.get("200", 0) > 0
    # Every point MLflow acknowledged during the restarts reads back through the replicas once.
    history = requests.get(
        f"{base}/runs/{run_id}/metrics/pnl/history",
        headers={"x-tenant-id": mesh.tenant},
        timeout=30,
    )
    assert history.status_code == 200, history.text
    found = [int(point["step"]) for point in history.json()["points"]]
    assert writer.acknowledged and found == writer.acknowledged

    reliability_report.add(
        "rolling_tracking",
        f"""
## Rolling restart of the tracking service under load

Two replicas of the tracking service in front of one MLflow server, in the gateway's one
cluster; two readers through the gateway (run search, run, metrics, metric history, experiments)
while a writer logs metric points to MLflow itself. Each replica was restarted as above
(`MLMESH_TRACKING_DRAIN_DELAY_S={DRAIN_DELAY_S:g}`).

{steps_table(steps)}

Reads by status: {statuses(read_calls)}. Points MLflow acknowledged {len(writer.acknowledged):,},
read back through the gateway {len(found):,}.
""",
    )
