"""Tasks survive the service: a task interrupted by a crash (SIGKILL) or a graceful stop
(SIGTERM) is taken over by the restarted service (once its lease lapsed, or at once when it was
handed over) and run again to its end, never FAILED for the restart nor RUNNING forever."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2

from mlmesh.training.v1 import model_pb2, task_pb2, training_service_pb2_grpc
from mlmesh.training.v1 import training_service_pb2 as pb
from tests.helpers.net import free_port
from tests.helpers.services import ServiceProcess
from tests.helpers.training import bars_csv, features_csv, training_env, upload_grpc

TENANT = [("x-tenant-id", "restart")]


@contextlib.contextmanager
def serving(env, root, port) -> Iterator[tuple[ServiceProcess, Any]]:
    """The training service on `port` and a stub to it; stopped on the way out (again, if the
    test stopped it already)."""
    process = ServiceProcess("mlmesh_training", port, env, root / f"training-{time.time()}.log")
    process.start(timeout_s=120)
    try:
        with grpc.insecure_channel(process.address) as channel:
            yield process, training_service_pb2_grpc.TrainingServiceStub(channel)
    finally:
        process.stop()


def upload_spx(stub) -> str:
    """SPX bars and features; the features' dataset id."""
    upload_grpc(stub, "bars", bars_csv(), TENANT)
    return upload_grpc(stub, "features", features_csv(), TENANT)


def wait_for(stub, task_id: str, what: str, timeout_s: float, reached: Callable[[Any], bool]):
    """Polls the task until `reached(task)`; fails with `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not reached(stub.GetTask(pb.GetTaskRequest(task_id=task_id), metadata=TENANT)):
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def running_task(stub) -> str:
    features = upload_spx(stub)
    parameters = struct_pb2.Struct()
    parameters.update({"n_estimators": 900})
    model = stub.CreateModel(
        pb.CreateModelRequest(
            model=model_pb2.Model(name="slow", model_type="random_forest", parameters=parameters)
        ),
        metadata=TENANT,
    )
    task = stub.TrainModelAsync(
        pb.TrainModelAsyncRequest(
            request=pb.TrainModelRequest(
                model_id=model.id,
                dataset=pb.DatasetSpec(feature_ids=[features], symbol="SPX"),
                cv=pb.CVConfig(method="expanding", n_splits=4, test_size=0.1),
            )
        ),
        metadata=TENANT,
    )
    # Until a fold is fitted: the local Ray runs, and it is its fate the SIGTERM tests check.
    wait_for(stub, task.task_id, "no fold fitted", 120, lambda t: t.progress.completed >= 1)
    return task.task_id


@pytest.mark.parametrize(
    "stop",
    [lambda p: os.killpg(p.process.pid, signal.SIGKILL), lambda p: p.stop()],
    ids=["crash", "graceful"],
)
def test_interrupted_task_is_taken_over_after_the_restart(
    postgres, mlflow_server, registry_process, tmp_path, stop
):
    env = {
        **training_env(postgres, mlflow_server, registry_process, tmp_path),
        "MLMESH_TRAINING_TASK_LEASE_S": "3",
        "MLMESH_TRAINING_TASK_HEARTBEAT_S": "1",
        "MLMESH_TRAINING_TASK_SCAN_S": "0.5",
    }
    port = free_port()
    with serving(env, tmp_path, port) as (first, stub):
        task_id = running_task(stub)
        stop(first)
        first.process.wait(30)
    with serving(env, tmp_path, port) as (_, stub):
        interrupted = stub.GetTask(pb.GetTaskRequest(task_id=task_id), metadata=TENANT)
        assert interrupted.status == task_pb2.Task.RUNNING, interrupted.error
        wait_for(
            stub,
            task_id,
            "the task never finished",
            300,
            lambda t: t.status != task_pb2.Task.RUNNING,
        )
        task = stub.GetTask(pb.GetTaskRequest(task_id=task_id), metadata=TENANT)
    assert task.status == task_pb2.Task.SUCCEEDED, task.error
    assert task.attempt == 2
    assert task.result["model_version"] == 2
    assert task.HasField("finished_at")


def test_study_killed_with_its_service_resumes_after_restart(
    postgres, mlflow_server, registry_process, tmp_path
):
    """SIGKILL mid-study: the trial it was running stays RUNNING in the database until the
    restarted service sees its lease lapse, fails it as interrupted and runs only the missing
    trials."""
    env = {
        **training_env(postgres, mlflow_server, registry_process, tmp_path),
        "MLMESH_TRAINING_TUNE_HEARTBEAT_S": "0.5",
    }
    request = pb.TuneModelRequest(
        plugin_key="ml.random_forest",
        dataset=pb.DatasetSpec(symbol="SPX"),
        cv=pb.CVConfig(method="expanding", n_splits=4, test_size=0.1),
        n_trials=5,
        max_parallel=1,
        seed=2,
        study_name="crash",
    )
    request.fixed_params.update({"n_estimators": 60})
    port = free_port()
    with serving(env, tmp_path, port) as (first, stub):
        request.dataset.feature_ids.append(upload_spx(stub))
        task = stub.TuneModelAsync(pb.TuneModelAsyncRequest(request=request), metadata=TENANT)
        wait_for(stub, task.task_id, "no trial finished", 120, lambda t: t.progress.completed >= 2)
        os.killpg(first.process.pid, signal.SIGKILL)
        first.process.wait(30)
    with serving(env, tmp_path, port) as (_, stub):
        result = stub.TuneModel(request, metadata=TENANT, timeout=300)
    states = [t.state for t in result.trials]
    assert states.count("COMPLETE") == result.n_trials_completed == 5
    assert "RUNNING" not in states
    interrupted = [t for t in result.trials if t.state == "FAIL"]
    assert all(t.error.startswith("interrupted") for t in interrupted)
    # At most the one trial in flight at the kill was lost; none that had finished.
    assert len(result.trials) - 5 <= 1


@pytest.mark.parametrize("target", ["process", "process_group"])
def test_sigterm_ends_the_process_within_its_grace_period(
    postgres, mlflow_server, registry_process, tmp_path, target
):
    """SIGTERM with a training in flight: exit code 0 within the grace period, the local Ray
    included, whether the signal reaches the service alone (Kubernetes) or its whole process
    group with Ray's processes (honcho under `make run`, Ctrl-C in a terminal)."""
    grace_s = 10
    env = {
        **training_env(postgres, mlflow_server, registry_process, tmp_path),
        "MLMESH_TRAINING_SHUTDOWN_GRACE_S": str(grace_s),
    }
    with serving(env, tmp_path, free_port()) as (process, stub):
        running_task(stub)
        if target == "process":
            process.process.send_signal(signal.SIGTERM)
            assert process.process.wait(grace_s) == 0, process.log_tail()
        else:
            # The local Ray is in a session of its own: the signal reaches the service alone,
            # which stops that Ray after its own shutdown.
            os.killpg(process.process.pid, signal.SIGTERM)
            assert process.process.wait(grace_s) == 0, process.log_tail()


def descendants(pid: int) -> dict[int, str]:
    """pid -> command name of every process below `pid`, read from /proc."""
    parents: dict[int, list[tuple[int, str]]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                text = f.read()
        except OSError:  # gone meanwhile
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses.
        name = text[text.index("(") + 1 : text.rindex(")")]
        ppid = int(text[text.rindex(")") + 2 :].split()[1])
        parents.setdefault(ppid, []).append((int(entry), name))
    found, stack = {}, [pid]
    while stack:
        for child, name in parents.get(stack.pop(), []):
            found[child] = name
            stack.append(child)
    return found


def alive(pids: dict[int, str], timeout_s: float) -> dict[int, str]:
    """Those of `pids` still running (not zombies) after up to `timeout_s` of waiting for them
    to end."""
    deadline = time.monotonic() + timeout_s
    while True:
        running = {}
        for pid, name in pids.items():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    text = f.read()
            except OSError:
                continue
            if text[text.rindex(")") + 2] != "Z" and name in text:
                running[pid] = name
        if not running or time.monotonic() >= deadline:
            return running
        time.sleep(0.2)


def train_rf(stub, features: str) -> pb.TrainModelResponse:
    model = stub.CreateModel(
        pb.CreateModelRequest(model=model_pb2.Model(name="rf", model_type="random_forest")),
        metadata=TENANT,
    )
    return stub.TrainModel(
        pb.TrainModelRequest(
            model_id=model.id,
            dataset=pb.DatasetSpec(feature_ids=[features], symbol="SPX"),
            cv=pb.CVConfig(method="expanding", n_splits=3, test_size=0.1),
        ),
        metadata=TENANT,
        timeout=300,
    )


@pytest.mark.parametrize("stop", ["sigterm", "sigkill"])
def test_the_local_ray_starts_with_the_first_job_and_ends_with_the_service(
    postgres, mlflow_server, registry_process, tmp_path, stop
):
    """Without RAY_ADDRESS the service is SERVING (and takes uploads) with no process of its
    own; the first training starts the local Ray. Once the service is gone, by SIGTERM (exit
    0) or by SIGKILL to it alone, none of Ray's processes is left."""
    env = training_env(postgres, mlflow_server, registry_process, tmp_path)
    with serving(env, tmp_path, free_port()) as (process, stub):
        pid = process.process.pid
        features = upload_spx(stub)
        assert descendants(pid) == {}, "no process before the first job"
        assert len(train_rf(stub, features).cv_metrics.folds) == 3
        ray_processes = descendants(pid)
        assert {"raylet", "gcs_server"} <= set(ray_processes.values())
        if stop == "sigterm":
            process.process.send_signal(signal.SIGTERM)
            assert process.process.wait(30) == 0, process.log_tail()
        else:
            process.process.kill()
            process.process.wait(30)
        assert alive(ray_processes, 30) == {}, process.log_tail()
