"""Schemathesis' stateful run over the whole OpenAPI document, through the real gateway in front
of the three real services: call sequences chained by the document's links (create an
experiment, then read, update, archive it or log runs into it...), with a fixed seed and a
bounded number of calls. No answer is a 5xx or strays from the document."""

from __future__ import annotations

import time

import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from tests.helpers.fuzz import fuzz_stateful
from tests.helpers.gateway import start_gateway
from tests.helpers.net import free_port
from tests.helpers.rest import Client
from tests.helpers.services import ServiceProcess
from tests.helpers.training import bars_csv, features_csv, upload

TENANT = "fuzz-stateful"
SEED = 20261201
SCENARIOS = 150
STEPS = 10
# CI has 2 cores and the whole suite a budget: the run stops here even if scenarios remain.
BUDGET_S = 90


@pytest.fixture(scope="module")
def mesh_gateway(mlflow_server, registry_process, training_process, tmp_path_factory):
    """Every service of the document behind one gateway, and a few resources of the fuzzing
    tenant in each, for the lists to hand to the links: MLflow runs, an experiment with a run,
    a model, datasets."""
    client = MlflowClient(tracking_uri=mlflow_server.url)
    experiment_id = client.create_experiment(f"stateful-{time.time_ns()}")
    for n in range(2):
        run = client.create_run(experiment_id, tags={"mlmesh.tenant": TENANT})
        client.log_batch(
            run.info.run_id,
            metrics=[Metric("sharpe", 0.5 + n, 0, step) for step in range(3)],
            params=[Param("lr", str(n))],
        )
    root = tmp_path_factory.mktemp("stateful")
    tracking = ServiceProcess(
        "mlmesh_tracking",
        free_port(),
        {"MLFLOW_TRACKING_URI": mlflow_server.url},
        root / "tracking.log",
    )
    tracking.start()
    gateway = start_gateway(
        root,
        {
            "tracking": tracking.address,
            "experiments": registry_process.address,
            "training": training_process.address,
        },
    )
    api = Client(gateway.base_url, TENANT)
    experiment = api("POST", "/api/v1/experiments", json={"name": "seeded"}).json()
    run = api("POST", "/api/v1/experiments/runs", json={"experiment_id": experiment["id"]}).json()
    points = [{"key": "sharpe", "value": 0.1 * step, "step": step} for step in range(3)]
    logged = api(
        "POST", f"/api/v1/experiments/runs/{run['id']}/log-batch", json={"metrics": points}
    )
    model = {"name": "seeded", "model_type": "random_forest", "parameters": {"n_estimators": 5}}
    created = [
        logged,
        api("POST", "/api/v1/models", json=model),
        upload(api, bars_csv(), kind="bars", symbol="SPX", name="bars"),
        upload(api, features_csv(), kind="features", symbol="SPX", name="features"),
    ]
    assert all(response.ok for response in created), [r.text for r in created]
    yield gateway
    gateway.stop()
    tracking.stop()


def test_stateful_run_over_the_whole_document_never_5xx(mesh_gateway):
    started = time.monotonic()
    run = fuzz_stateful(
        mesh_gateway.base_url,
        headers={"x-tenant-id": TENANT},
        seed=SEED,
        scenarios=SCENARIOS,
        steps=STEPS,
        budget_s=BUDGET_S,
    )
    print(f"stateful run: {sum(run.statuses.values())} calls in {time.monotonic() - started:.1f} s")
    print(f"{run.scenarios} scenarios, {run.restarts} restarts; linked: {dict(run.linked)}")
    assert not run.failures, "\n\n".join(run.failures)
    assert not [key for key in run.statuses if key[1] >= 500]
    # The links chained real ids: calls fed by them succeeded, in more than one service. (Which
    # ones varies: the services' answers steer the state machine.)
    reached = {label.split("/")[3] for label in run.linked}
    assert sum(run.linked.values()) >= 5 and len(reached) >= 2, run.linked
