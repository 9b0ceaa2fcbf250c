"""Training without a single point of failure: two training replicas on one database and one
Ray cluster, behind the gateway's one training cluster, with short task leases. SIGKILL the
replica running a train, a tune and an AutoML task: the other takes all three over (the tune
resumes its study and runs only the missing trials) and they all succeed, each started twice and
never by both replicas at once. A rolling restart (SIGTERM each replica in turn) under light
load hands the running tasks over instead of failing them, with no 5xx beyond (retried) 503s."""

from __future__ import annotations

import collections
import datetime
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import optuna
import pytest
import requests
from mlflow.tracking import MlflowClient

from mlmesh.training.v1 import training_service_pb2 as pb
from mlmesh.training.v1 import training_service_pb2_grpc
from mlmesh_training.tuning import INTERRUPTED, sync_url
from tests.helpers.gateway import Gateway, start_gateway
from tests.helpers.net import free_port
from tests.helpers.ray_cluster import RAY_ENV, RayNode, wait_for_head
from tests.helpers.services import ServiceProcess
from tests.helpers.training import bars_csv, features_csv, training_env, upload_grpc
from tests.reliability.conftest import wait_for
from tests.reliability.report import statuses, table

SERVICE = "mlmesh.training.v1.TrainingService"
# A lease of five heartbeats: a replica's event loop may stall for seconds on 2 loaded cores.
LEASE_S, HEARTBEAT_S, SCAN_S, TUNE_HEARTBEAT_S = 5.0, 1.0, 0.5, 0.5
DRAIN_DELAY_S = 2.0
TASKS = "/api/v1/tasks"
DONE = ("SUCCEEDED", "FAILED", "CANCELLED")
CV = {"method": "expanding", "n_splits": 4, "test_size": 0.1}
TRIALS = 6


@pytest.fixture(scope="module")
def ray_address(tmp_path_factory) -> Iterator[str]:
    """One Ray cluster of one node with two CPUs, shared by both replicas."""
    root = tmp_path_factory.mktemp("ray")
    port = free_port()
    address = f"127.0.0.1:{port}"
    head = RayNode(
        [
            "--head",
            f"--port={port}",
            f"--ray-client-server-port={free_port()}",
            "--num-cpus=2",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={free_port()}",
        ],
        root / "head.log",
    )
    try:
        wait_for_head(head, address)
        yield address
    finally:
        head.kill()


@dataclass
class Pair:
    replicas: list[ServiceProcess]
    gateway: Gateway
    database_url: str
    tenant: str = field(default_factory=lambda: f"t-{uuid.uuid4().hex[:10]}")

    @property
    def metadata(self) -> list[tuple[str, str]]:
        return [("x-tenant-id", self.tenant)]

    def stub(self, replica: ServiceProcess):
        channel = grpc.insecure_channel(replica.address)
        return training_service_pb2_grpc.TrainingServiceStub(channel)

    def client(self) -> requests.Session:
        session = requests.Session()
        session.headers["x-tenant-id"] = self.tenant
        return session

    def in_rotation(self, replica: ServiceProcess) -> bool:
        admin = f"http://127.0.0.1:{self.gateway.settings.admin_port}/clusters"
        lines = requests.get(admin, timeout=5).text.splitlines()
        return f"training::{replica.address}::health_flags::healthy" in lines

    def taken_over(self, replica: ServiceProcess) -> list[dict]:
        """The replica's own log of the tasks it took over."""
        events = []
        for line in replica.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{") and '"task taken over"' in line:
                events.append(json.loads(line))
        return events


@pytest.fixture
def training_pair(
    ray_address, postgres, mlflow_server, registry_process, tmp_path: Path
) -> Iterator[Pair]:
    env = {
        **training_env(postgres, mlflow_server, registry_process, tmp_path),
        **RAY_ENV,
        "RAY_ADDRESS": ray_address,
        "MLMESH_TRAINING_TASK_LEASE_S": str(LEASE_S),
        "MLMESH_TRAINING_TASK_HEARTBEAT_S": str(HEARTBEAT_S),
        "MLMESH_TRAINING_TASK_SCAN_S": str(SCAN_S),
        "MLMESH_TRAINING_TUNE_HEARTBEAT_S": str(TUNE_HEARTBEAT_S),
        "MLMESH_TRAINING_DRAIN_DELAY_S": str(DRAIN_DELAY_S),
        "MLMESH_TRAINING_TASK_MAX_ATTEMPTS": "5",
    }
    replicas = [
        ServiceProcess(
            "mlmesh_training",
            free_port(),
            {**env, "MLMESH_TRAINING_REPLICA_ID": f"training-{n}"},
            tmp_path / f"training-{n}.log",
        )
        for n in range(2)
    ]
    gateway = None
    try:
        for replica in replicas:
            replica.start(timeout_s=120)
        upstream = ",".join(replica.address for replica in replicas)
        gateway = start_gateway(tmp_path / "gateway", {"training": upstream})
        yield Pair(replicas, gateway, env["MLMESH_TRAINING_DATABASE_URL"])
    finally:
        if gateway is not None:
            gateway.stop()
        for replica in replicas:
            replica.stop(timeout_s=30)


def upload(pair: Pair, replica: ServiceProcess) -> dict:
    stub = pair.stub(replica)
    upload_grpc(stub, "bars", bars_csv(), pair.metadata)
    features = upload_grpc(stub, "features", features_csv(), pair.metadata)
    return {"feature_ids": [features], "symbol": "SPX"}


def submit(pair: Pair, replica: ServiceProcess, kind: str, dataset: dict, study: str = "") -> str:
    """A train, a tune or an AutoML task submitted to `replica` over gRPC (so that it runs it);
    its id."""
    stub = pair.stub(replica)
    if kind == "tune":
        tune = pb.TuneModelRequest(
            plugin_key="ml.random_forest",
            dataset=dataset,
            cv=CV,
            n_trials=TRIALS,
            max_parallel=1,
            seed=2,
            study_name=study,
        )
        tune.fixed_params.update({"n_estimators": 40})
        request = pb.TuneModelAsyncRequest(request=tune)
        return stub.TuneModelAsync(request, metadata=pair.metadata).task_id
    if kind == "automl":
        automl = pb.RunAutoMLRequest(dataset=dataset, cv=CV, seed=1)
        automl.candidates["ml.random_forest"].update({"n_estimators": 200})
        automl.candidates["ml.xgboost"].update({"n_estimators": 100})
        request = pb.RunAutoMLAsyncRequest(request=automl)
        return stub.RunAutoMLAsync(request, metadata=pair.metadata).task_id
    model = stub.CreateModel(
        pb.CreateModelRequest(
            model={
                "name": "forest",
                "model_type": "random_forest",
                "parameters": {"n_estimators": 500},
            }
        ),
        metadata=pair.metadata,
    )
    train = pb.TrainModelRequest(model_id=model.id, dataset=dataset, cv=CV)
    request = pb.TrainModelAsyncRequest(request=train)
    return stub.TrainModelAsync(request, metadata=pair.metadata).task_id


class Poller(threading.Thread):
    """Reads every task (and the model list) through the gateway until `stop`: the statuses of
    its calls, and every state each task was seen in."""

    def __init__(self, pair: Pair, task_ids: list[str], stop: threading.Event) -> None:
        super().__init__(name="poller", daemon=True)
        self.base = pair.gateway.base_url
        self.session = pair.client()
        self.task_ids = task_ids
        self.stop = stop
        self.calls: collections.Counter = collections.Counter()
        self.seen: dict[str, set[str]] = collections.defaultdict(set)
        self.last: dict[str, dict] = {}

    def run(self) -> None:
        position = 0
        while not self.stop.is_set():
            # The task list may grow while it runs.
            urls = [f"{self.base}{TASKS}/{task_id}" for task_id in self.task_ids]
            urls.append(f"{self.base}/api/v1/models?limit=5")
            url = urls[position % len(urls)]
            position += 1
            try:
                response = self.session.get(url, timeout=15)
                self.calls[str(response.status_code)] += 1
            except requests.RequestException:
                self.calls["connection error"] += 1
                continue
            if response.status_code == 200 and url.split("/")[-1] in self.task_ids:
                task = response.json()
                self.seen[task["task_id"]].add(task["status"])
                self.last[task["task_id"]] = task
            time.sleep(0.05)

    def done(self) -> bool:
        return len(self.last) == len(self.task_ids) and all(
            t["status"] in DONE for t in self.last.values()
        )


def progress(poller: Poller, task_id: str) -> int:
    """The task's completed steps as the poller last read them."""
    return poller.last.get(task_id, {}).get("progress", {}).get("completed", 0)


def study_trials(pair: Pair, name: str) -> list[optuna.trial.FrozenTrial]:
    storage = optuna.storages.RDBStorage(sync_url(pair.database_url))
    try:
        return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    finally:
        storage.remove_session()
        storage.engine.dispose()


def counted(trials) -> int:
    return sum(
        t.state.name in ("COMPLETE", "PRUNED")
        or (t.state.name == "FAIL" and INTERRUPTED not in t.user_attrs)
        for t in trials
    )


def test_sigkill_the_replica_running_tasks_the_other_takes_them_over(
    training_pair, mlflow_server, reliability_report
):
    pair = training_pair
    mlflow_url = mlflow_server.url
    victim, survivor = pair.replicas
    dataset = upload(pair, victim)
    ids = {"tune": submit(pair, victim, "tune", dataset, study="takeover")}
    stop = threading.Event()
    poller = Poller(pair, [ids["tune"]], stop)
    poller.start()
    try:
        # The tune first, so that it has finished a trial (and has more to run) once the train
        # and the AutoML run are under way too.
        wait_for(lambda: progress(poller, ids["tune"]) >= 1, 240, "a trial of the tune finished")
        ids |= {kind: submit(pair, victim, kind, dataset) for kind in ("train", "automl")}
        kinds = {ids[kind]: kind for kind in ("train", "tune", "automl")}
        poller.task_ids = list(kinds)
        wait_for(lambda: progress(poller, ids["train"]) >= 1, 240, "a fold of the train fitted")
        wait_for(lambda: ids["automl"] in poller.last, 30, "the AutoML task read")
        at_kill = {kinds[t]: poller.last[t]["status"] for t in kinds}
        assert set(at_kill.values()) == {"RUNNING"}, at_kill
        victim.kill()
        killed, killed_at = time.monotonic(), datetime.datetime.now()
        taken = wait_for(lambda: len(pair.taken_over(survivor)) == 3, 60, "all three taken over")
        wait_for(poller.done, 600, "every task finished")
        settled = time.monotonic() - killed
    finally:
        stop.set()
        poller.join(30)

    final = poller.last
    assert {kinds[t]: final[t]["status"] for t in kinds} == dict.fromkeys(
        ("train", "tune", "automl"), "SUCCEEDED"
    ), {kinds[t]: final[t].get("error") for t in kinds}
    assert all(final[t]["attempt"] == 2 for t in kinds), {
        kinds[t]: final[t]["attempt"] for t in kinds
    }
    # Never seen FAILED on the way; every read through the gateway answered.
    assert all("FAILED" not in seen for seen in poller.seen.values()), poller.seen
    assert set(poller.calls) <= {"200", "503"}, poller.calls
    # Each task taken over exactly once, from the victim.
    events = pair.taken_over(survivor)
    assert sorted(e["task_id"] for e in events) == sorted(kinds)
    assert {e["previous_owner"] for e in events} == {"training-0"}
    assert pair.taken_over(victim) == []

    # The tune ran only the missing trials: the trials the victim finished were kept, the one
    # it was running failed as interrupted, and the survivor (every trial started after the
    # kill) ran exactly the rest.
    trials = study_trials(pair, f"{pair.tenant}/takeover")
    victims = [t for t in trials if t.datetime_start < killed_at]
    survivors = [t for t in trials if t.datetime_start >= killed_at]
    finished_before = counted(victims)
    interrupted = [t for t in victims if t.state.name != "COMPLETE"]
    assert counted(trials) == TRIALS == final[ids["tune"]]["result"]["n_trials_completed"]
    assert 1 <= finished_before < TRIALS
    assert len(survivors) == TRIALS - finished_before == counted(survivors)
    assert all(t.state.name == "FAIL" and INTERRUPTED in t.user_attrs for t in interrupted)
    assert len(interrupted) <= 1  # one trial at a time
    # The train ran to its end once: the model moved one version.
    model_id = final[ids["train"]]["result"]["model_id"]
    model = pair.client().get(f"{pair.gateway.base_url}/api/v1/models/{model_id}").json()
    assert model["version"] == 2 and final[ids["train"]]["result"]["model_version"] == 2
    board = final[ids["automl"]]["result"]["leaderboard"]
    assert {row["plugin_key"] for row in board} == {"ml.random_forest", "ml.xgboost"}
    # In MLflow: the study's one parent run holds one run per counted trial, none twice; the
    # killed AutoML attempt's leaderboard run was ended KILLED before the new one started.
    mlflow = MlflowClient(mlflow_url)
    experiment = mlflow.get_experiment_by_name("mlmesh-training").experiment_id
    tenant = f"tags.`mlmesh.tenant` = '{pair.tenant}'"
    study_runs = mlflow.search_runs([experiment], f"{tenant} and tags.study_name = 'takeover'")
    trial_numbers = [
        r.data.tags["trial_number"] for r in study_runs if "trial_number" in r.data.tags
    ]
    assert len(study_runs) - len(trial_numbers) == 1
    assert len(trial_numbers) == len(set(trial_numbers)) == TRIALS
    attempts = sorted(
        mlflow.search_runs([experiment], f"tags.`mlmesh.task_id` = '{ids['automl']}'"),
        key=lambda r: r.info.start_time,
    )
    assert [r.info.status for r in attempts] == ["KILLED", "FINISHED"]
    assert attempts[0].info.end_time <= attempts[1].info.start_time
    assert attempts[1].info.run_id == final[ids["automl"]]["result"]["mlflow_run_id"]

    reliability_report.add(
        "training_kill",
        f"""
## SIGKILL of a training replica

Two training replicas (`MLMESH_TRAINING_TASK_LEASE_S={LEASE_S:g}`, heartbeat
{HEARTBEAT_S:g} s, scan every {SCAN_S:g} s, study heartbeat {TUNE_HEARTBEAT_S:g} s) on one
PostgreSQL database and one Ray cluster, behind the gateway's one training cluster. A tune
({TRIALS} trials, one at a time), then a train and an AutoML task were submitted to the first
replica, which got SIGKILL once the tune had finished a trial and the train a fold, with all
three RUNNING.

{
            table(
                [
                    ("tasks taken over by the other replica", f"{len(events)} of 3"),
                    ("all taken over after the kill", f"{taken * 1000:,.0f} ms"),
                    ("all SUCCEEDED after the kill", f"{settled:,.1f} s"),
                    ("tune trials kept from the killed replica", finished_before),
                    ("tune trials interrupted by the kill", len(interrupted)),
                    ("tune trials run after the takeover", len(survivors)),
                    ("tasks seen FAILED, or taken over twice", "0"),
                ],
                ("", ""),
            )
        }

Reads of the tasks through the gateway during and after the takeover, by status:
{statuses(dict(poller.calls))}.
""",
    )


def test_rolling_restart_hands_tasks_over(training_pair, reliability_report):
    pair = training_pair
    first = pair.replicas[0]
    wait_for(lambda: all(pair.in_rotation(r) for r in pair.replicas), 30, "both in rotation")
    dataset = upload(pair, first)
    tune = pb.TuneModelRequest(
        plugin_key="ml.random_forest",
        dataset=dataset,
        cv=CV,
        n_trials=10,
        max_parallel=1,
        seed=3,
        study_name="rolling",
    )
    tune.fixed_params.update({"n_estimators": 60})
    # Submitted to the first replica, so that the first SIGTERM hands it over.
    task = pair.stub(first).TuneModelAsync(
        pb.TuneModelAsyncRequest(request=tune), metadata=pair.metadata
    )
    stop = threading.Event()
    poller = Poller(pair, [task.task_id], stop)
    poller.start()
    steps = []
    try:
        wait_for(
            lambda: poller.last.get(task.task_id, {}).get("progress", {}).get("completed", 0) >= 1,
            240,
            "a trial finished",
        )
        for replica in pair.replicas:
            signalled = time.monotonic()
            replica.process.terminate()
            wait_for(
                lambda r=replica: r.health(SERVICE) in ("NOT_SERVING", "UNREACHABLE"),
                5,
                "NOT_SERVING after SIGTERM",
            )
            assert replica.process.wait(60) == 0, replica.log_tail()
            exited_s = time.monotonic() - signalled
            replica.start(timeout_s=120)
            wait_for(lambda r=replica: pair.in_rotation(r), 30, "back in rotation")
            back_s = time.monotonic() - signalled
            steps.append((replica.address, exited_s, back_s))
        wait_for(poller.done, 600, "the tune finished")
    finally:
        stop.set()
        poller.join(30)
    final = poller.last[task.task_id]
    assert final["status"] == "SUCCEEDED", final.get("error")
    assert "FAILED" not in poller.seen[task.task_id]
    assert set(poller.calls) <= {"200", "503"}, poller.calls
    takeovers = [e for r in pair.replicas for e in pair.taken_over(r)]
    # The first SIGTERM handed it over; the second too if the task was on that replica then.
    assert 1 <= len(takeovers) == final["attempt"] - 1 <= 2
    trials = study_trials(pair, f"{pair.tenant}/rolling")
    assert counted(trials) == 10 == final["result"]["n_trials_completed"]
    # A handover interrupts at most the one trial in flight each time.
    assert len(trials) - 10 <= len(takeovers)

    reliability_report.add(
        "training_rolling",
        f"""
## Rolling restart of the training replicas

The same two replicas (`MLMESH_TRAINING_DRAIN_DELAY_S={DRAIN_DELAY_S:g}`), a 10-trial tune
running, a reader polling the task and the model list through the gateway. Each replica in turn
got SIGTERM and was started again once it had exited; the tune was handed over (its lease
released at once, its trial in flight failed as interrupted) instead of being failed.

{
            table(
                [
                    (address, f"{exited * 1000:,.0f} ms", f"{back * 1000:,.0f} ms")
                    for address, exited, back in steps
                ],
                ("replica", "exited", "back in rotation"),
            )
        }

(Times from the SIGTERM.) Handovers: {len(takeovers)}; the task ended SUCCEEDED at attempt
{final["attempt"]}, never FAILED, with {counted(trials)} trials counted of {len(trials)} run.
Reads by status: {statuses(dict(poller.calls))}.
""",
    )
