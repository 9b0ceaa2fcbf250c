"""MLflow behind the training service goes away and comes back (a forwarder in front of the real
MLflow server, stopped and started): a training whose lineage cannot be logged fails with 503
MLFLOW_UNAVAILABLE, sync and async (the task ends FAILED with that reason), the model is left
as it was; never SUCCEEDED without its MLflow run. Once MLflow is back, the same process trains
and records the lineage."""

from __future__ import annotations

import time
import uuid

from mlflow.tracking import MlflowClient

from tests.helpers.gateway import start_gateway
from tests.helpers.net import free_port
from tests.helpers.rest import Client
from tests.helpers.services import ServiceProcess
from tests.helpers.training import bars_csv, features_csv, training_env, upload
from tests.reliability.conftest import wait_for
from tests.reliability.proxy import Proxy
from tests.reliability.report import table

MODELS = "/api/v1/models"
FAST = {"n_estimators": 5, "max_depth": 3}


def _reason(response) -> str:
    (info,) = [d for d in response.json()["details"] if d["@type"].endswith("ErrorInfo")]
    return info["reason"]


def test_training_with_mlflow_down_then_back(
    postgres, mlflow_server, registry_process, tmp_path, reliability_report
):
    proxy = Proxy(mlflow_server.port).start()
    env = training_env(postgres, mlflow_server, registry_process, tmp_path)
    env |= {
        "MLFLOW_TRACKING_URI": proxy.url,
        "MLMESH_TRAINING_MLFLOW_TIMEOUT_S": "5",
        "MLMESH_TRAINING_RAY_NUM_CPUS": "1",
        # The MLflow client's own retries (7, with back-off) would outlast the bounded wait.
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    }
    service = ServiceProcess("mlmesh_training", free_port(), env, tmp_path / "training.log")
    service.start(timeout_s=120)
    gateway = start_gateway(
        tmp_path / "gateway",
        {"training": service.address, "experiments": registry_process.address},
    )
    try:
        api = Client(gateway.base_url, f"t-{uuid.uuid4().hex[:10]}")
        bars = upload(api, bars_csv(), kind="bars", symbol="SPX", name="b").json()
        features = upload(api, features_csv(), kind="features", symbol="SPX", name="f").json()
        assert bars["id"] and features["id"]
        model = api(
            "POST",
            MODELS,
            json={"name": "rf", "model_type": "random_forest", "parameters": FAST},
        ).json()
        body = {
            "dataset": {"feature_ids": [features["id"]], "symbol": "SPX"},
            "cv": {"method": "expanding", "n_splits": 3, "test_size": 0.1},
        }
        path = f"{MODELS}/{model['id']}/train"

        proxy.stop()
        started = time.monotonic()
        refused = api("POST", path, json=body)
        refused_s = time.monotonic() - started
        assert refused.status_code == 503, refused.text
        assert _reason(refused) == "MLFLOW_UNAVAILABLE"
        task = api("POST", f"{path}/async", json=body).json()
        finished: dict = {}

        def done() -> bool:
            finished.update(api("GET", f"/api/v1/tasks/{task['task_id']}").json())
            return finished["status"] not in ("PENDING", "RUNNING")

        wait_for(done, 120, "the async training to end")
        assert finished["status"] == "FAILED"
        assert "MLFLOW_UNAVAILABLE" in str(finished["error"])
        unchanged = api("GET", f"{MODELS}/{model['id']}").json()
        assert unchanged["version"] == model["version"] and not unchanged["mlflow_run_id"]

        proxy.start()
        started = time.monotonic()
        trained = api("POST", path, json=body)
        trained_s = time.monotonic() - started
        assert trained.status_code == 200, trained.text
        run = MlflowClient(mlflow_server.url).get_run(trained.json()["mlflow_run_id"])
        assert run.data.tags["run_type"] == "training"
        assert run.data.tags["model_version"] == str(model["version"] + 1)
        assert api("GET", f"{MODELS}/{model['id']}").json()["version"] == model["version"] + 1
    finally:
        gateway.stop()
        service.stop()
        proxy.stop()

    reliability_report.add(
        "mlflow",
        f"""
## MLflow stopped and started behind the training service

The training service's MLflow server reached through a forwarder that the test stopped (new
connections refused, open ones reset) and started again; the MLflow server itself kept running.

{
            table(
                [
                    (
                        "sync training, MLflow down",
                        f"503 MLFLOW_UNAVAILABLE after {refused_s * 1000:,.0f} ms",
                    ),
                    (
                        "async training, MLflow down",
                        f"task {finished['status']}, reason MLFLOW_UNAVAILABLE",
                    ),
                    ("the model meanwhile", "unchanged (version, no MLflow run)"),
                    (
                        "sync training, MLflow back",
                        f"200 after {trained_s * 1000:,.0f} ms, lineage tags in MLflow",
                    ),
                ],
                ("call", "outcome"),
            )
        }
""",
    )
