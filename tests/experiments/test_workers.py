"""The experiments service as several worker processes on one port (MLMESH_EXPERIMENTS_WORKERS,
SO_REUSEPORT), real processes on a real PostgreSQL: the kernel spreads connections over the
workers, they share one registry, migrations run once, SIGTERM drains every worker, and a
worker that dies takes the service down rather than leaving it half-served."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import uuid
from pathlib import Path

import grpc
import pytest

from mlmesh.experiments.v1 import experiment_pb2, experiments_service_pb2_grpc
from mlmesh.experiments.v1 import experiments_service_pb2 as pb
from tests.helpers.net import free_port
from tests.helpers.services import ServiceProcess

WORKERS = 3
CONNECTIONS = 12


def _service(
    postgres, tmp_path: Path, port: int | None = None, *, log: str = "experiments.log"
) -> ServiceProcess:
    database = postgres.create_database(f"workers_{uuid.uuid4().hex[:8]}")
    return _process(database.url("asyncpg"), tmp_path, port or free_port(), log)


def _process(database_url: str, tmp_path: Path, port: int, log: str) -> ServiceProcess:
    return ServiceProcess(
        "mlmesh_experiments",
        port,
        {
            "MLMESH_EXPERIMENTS_DATABASE_URL": database_url,
            "MLMESH_EXPERIMENTS_WORKERS": str(WORKERS),
            "MLMESH_ARTIFACT_URI": f"file://{tmp_path / 'artifacts'}",
        },
        tmp_path / log,
    )


def _events(service: ServiceProcess, name: str) -> list[dict]:
    lines = service.log_path.read_text().splitlines()
    events = [json.loads(line) for line in lines if line.startswith("{")]
    return [event for event in events if event.get("event") == name]


def _wait_for_events(service: ServiceProcess, name: str, count: int) -> list[dict]:
    """Health answers once the first worker serves; the others follow within moments."""
    deadline = time.monotonic() + 30
    while len(found := _events(service, name)) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    return found


def _workers(service: ServiceProcess) -> set[int]:
    assert service.process is not None
    children = Path(f"/proc/{service.process.pid}/task/{service.process.pid}/children")
    return {int(pid) for pid in children.read_text().split()}


def _channel(address: str) -> grpc.Channel:
    # A connection of its own: channels to one target otherwise share the global subchannel.
    return grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def _established_inodes(port: int) -> set[str]:
    """Inodes of the server side of established connections on `port` (gRPC's sockets may be
    IPv6 ones carrying IPv4, listed in tcp6)."""
    inodes = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "01":  # 01: ESTABLISHED
                inodes.add(fields[9])
    return inodes


@pytest.fixture
def workers_service(postgres, tmp_path):
    service = _service(postgres, tmp_path).start()
    yield service
    service.stop()


def test_workers_share_one_port_and_one_registry(workers_service):
    service = workers_service
    serving = _wait_for_events(service, "serving", WORKERS)
    workers = _workers(service)
    assert len(workers) == WORKERS
    assert {event["pid"] for event in serving} == workers
    assert {event["port"] for event in serving} == {service.port}
    # Migrations ran once, in the parent, before any worker existed.
    assert len(_events(service, "database migrated")) == 1

    channels = [_channel(service.address) for _ in range(CONNECTIONS)]
    try:
        names = []
        for i, channel in enumerate(channels):
            stub = experiments_service_pb2_grpc.ExperimentServiceStub(channel)
            names.append(f"workers-{i}-{uuid.uuid4().hex[:6]}")
            experiment = experiment_pb2.Experiment(name=names[-1])
            stub.CreateExperiment(pb.CreateExperimentRequest(experiment=experiment))
        # The kernel spread the connections over the workers (all 12 on one of 3: p ~ 1e-5).
        established = _established_inodes(service.port)
        holding = [pid for pid in workers if _socket_inodes(pid) & established]
        assert len(holding) >= 2, f"connections held by {holding} of {sorted(workers)}"
        # Whichever worker wrote an experiment, every other one reads it.
        for channel in channels:
            stub = experiments_service_pb2_grpc.ExperimentServiceStub(channel)
            listed = stub.ListExperiments(pb.ListExperimentsRequest(limit=100)).experiments
            assert set(names) <= {experiment.name for experiment in listed}
    finally:
        for channel in channels:
            channel.close()


def test_sigterm_drains_every_worker_and_the_port_serves_again(postgres, tmp_path):
    database_url = postgres.create_database(f"workers_{uuid.uuid4().hex[:8]}").url("asyncpg")
    service = _process(database_url, tmp_path, free_port(), "experiments.log").start()
    _wait_for_events(service, "serving", WORKERS)
    workers = _workers(service)
    with _channel(service.address) as channel:
        stub = experiments_service_pb2_grpc.ExperimentServiceStub(channel)
        stub.ListExperiments(pb.ListExperimentsRequest())
    assert service.stop() == 0
    assert {event["pid"] for event in _events(service, "stopped")} == workers
    assert len(_events(service, "shutting down")) == WORKERS
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid)
    # A restart on the same port, whose earlier connections may linger in TIME_WAIT.
    again = _process(database_url, tmp_path, service.port, "again.log").start()
    try:
        with _channel(again.address) as channel:
            stub = experiments_service_pb2_grpc.ExperimentServiceStub(channel)
            assert stub.ListExperiments(pb.ListExperimentsRequest()) is not None
    finally:
        assert again.stop() == 0


def test_a_worker_that_dies_stops_the_service(postgres, tmp_path):
    service = _service(postgres, tmp_path).start()
    _wait_for_events(service, "serving", WORKERS)
    victim, *others = sorted(_workers(service))
    os.kill(victim, signal.SIGKILL)
    assert service.process is not None
    assert service.process.wait(30) == 1
    # The others were stopped the orderly way, and nothing is left listening on the port.
    assert {event["pid"] for event in _events(service, "stopped")} == set(others)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", service.port))


def test_a_port_in_use_fails_loudly(postgres, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        service = _service(postgres, tmp_path, port=taken.getsockname()[1])
        with pytest.raises(RuntimeError, match="exited early"):
            service.start(timeout_s=30)
    assert "Address already in use" in service.log_tail()


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
