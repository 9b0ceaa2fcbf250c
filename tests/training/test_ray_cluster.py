"""The cluster path for real: a multi-process Ray cluster (`ray start --head` with no CPUs and a
separate `ray start --address=...` worker node with two), the training service pointed at it with
RAY_ADDRESS. Folds and trials run on the worker node, by the node ids Ray reports; killing the
worker mid-study loses no finished trial, and the study finishes once a worker is back."""

from __future__ import annotations

import time

import grpc
import pytest

from mlmesh.training.v1 import model_pb2, task_pb2, training_service_pb2_grpc
from mlmesh.training.v1 import training_service_pb2 as pb
from tests.helpers.net import free_port
from tests.helpers.ray_cluster import RAY_ENV, RayNode, alive_nodes, wait_for_head
from tests.helpers.services import ServiceProcess
from tests.helpers.training import bars_csv, features_csv, training_env, upload_grpc

TENANT = [("x-tenant-id", "ray-cluster")]


def wait_for_worker(address: str, known: set[str]) -> str:
    """The id of a new live node with CPUs."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        new = [n for n, cpus in alive_nodes(address).items() if cpus and n not in known]
        if new:
            return new[0]
        time.sleep(1)
    raise AssertionError("the worker node never joined")


@pytest.fixture
def cluster(tmp_path):
    port, client_port, dashboard_port = free_port(), free_port(), free_port()
    address = f"127.0.0.1:{port}"
    nodes: list[RayNode] = []

    def worker() -> RayNode:
        node = RayNode(
            [f"--address={address}", "--num-cpus=2"], tmp_path / f"worker-{len(nodes)}.log"
        )
        nodes.append(node)
        return node

    head = RayNode(
        [
            "--head",
            f"--port={port}",
            f"--ray-client-server-port={client_port}",
            "--num-cpus=0",
            # As in deploy/k8s: the dashboard's agents set up the Ray Client's per-client server.
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard_port}",
        ],
        tmp_path / "head.log",
    )
    nodes.append(head)
    try:
        nodes_up = wait_for_head(head, address)
        clients = {"driver": address, "client": f"ray://127.0.0.1:{client_port}"}
        yield address, clients, next(iter(nodes_up)), worker
    finally:
        for node in reversed(nodes):
            node.kill()


# "driver": the service joins the cluster as a driver (GCS address); "client": through the Ray
# Client server (`ray://`), as deploy/k8s connects it.
@pytest.mark.parametrize("connect", ["driver", "client"])
def test_folds_and_trials_run_on_the_worker_node_and_survive_its_loss(
    cluster, postgres, mlflow_server, registry_process, tmp_path, connect
):
    address, clients, head_id, start_worker = cluster
    first = start_worker()
    first_id = wait_for_worker(address, {head_id})
    env = {**training_env(postgres, mlflow_server, registry_process, tmp_path), **RAY_ENV}
    env["RAY_ADDRESS"] = clients[connect]
    service = ServiceProcess("mlmesh_training", free_port(), env, tmp_path / "training.log")
    service.start(timeout_s=120)
    try:
        with grpc.insecure_channel(service.address) as channel:
            stub = training_service_pb2_grpc.TrainingServiceStub(channel)
            upload_grpc(stub, "bars", bars_csv(), TENANT)
            features = upload_grpc(stub, "features", features_csv(), TENANT)
            dataset = pb.DatasetSpec(feature_ids=[features], symbol="SPX")
            cv = pb.CVConfig(method="expanding", n_splits=4, test_size=0.1)

            model = stub.CreateModel(
                pb.CreateModelRequest(model=model_pb2.Model(name="rf", model_type="random_forest")),
                metadata=TENANT,
            )
            trained = stub.TrainModel(
                pb.TrainModelRequest(model_id=model.id, dataset=dataset, cv=cv),
                metadata=TENANT,
                timeout=300,
            )
            assert {f.node_id for f in trained.cv_metrics.folds} == {first_id}

            request = pb.TuneModelRequest(
                plugin_key="ml.random_forest",
                dataset=dataset,
                cv=cv,
                n_trials=6,
                max_parallel=2,
                seed=4,
                study_name="cluster",
            )
            request.fixed_params.update({"n_estimators": 150})
            task = stub.TuneModelAsync(pb.TuneModelAsyncRequest(request=request), metadata=TENANT)

            def get() -> task_pb2.Task:
                return stub.GetTask(pb.GetTaskRequest(task_id=task.task_id), metadata=TENANT)

            deadline = time.monotonic() + 180
            while get().progress.completed < 2:
                assert time.monotonic() < deadline, "no trial finished on the worker"
                time.sleep(0.1)
            first.kill()
            killed_at = time.time()
            # No CPU left in the cluster: the study waits (its lost trials re-asked), it does
            # not fail.
            time.sleep(8)
            assert get().status == task_pb2.Task.RUNNING
            start_worker()
            second_id = wait_for_worker(address, {head_id, first_id})
            deadline = time.monotonic() + 240
            while (current := get()).status == task_pb2.Task.RUNNING:
                assert time.monotonic() < deadline, "the study did not finish"
                time.sleep(0.5)
            assert current.status == task_pb2.Task.SUCCEEDED, current.error
            result = stub.TuneModel(request, metadata=TENANT, timeout=120)
    finally:
        service.stop()

    trials = list(result.trials)
    complete = [t for t in trials if t.state == "COMPLETE"]
    assert len(complete) == result.n_trials_completed == 6
    assert {t.node_id for t in complete} <= {first_id, second_id}
    before = [t for t in complete if t.finished_at.ToSeconds() < killed_at]
    after = [t for t in complete if t.node_id == second_id]
    assert len(before) >= 2 and all(t.node_id == first_id for t in before)
    assert after and len(before) + len(after) == 6
    lost = [t for t in trials if t.state == "FAIL"]
    assert lost and all(t.error.startswith("interrupted") for t in lost)
