"""The training service as a real process (PostgreSQL, local Ray, the real MLflow server and the
experiments service), behind the real Envoy gateway, with S&P 500 demo uploads."""

from __future__ import annotations

import io
import uuid

import pytest
import requests

from tests.helpers.gateway import start_gateway
from tests.helpers.net import free_port
from tests.helpers.rest import Client
from tests.helpers.services import ServiceProcess
from tests.training.data import sp500_bars, sp500_features

ROWS = 600


def bars_csv(rows: int = ROWS) -> bytes:
    return sp500_bars(rows).to_csv().encode()


def features_csv(rows: int = ROWS) -> bytes:
    X, _ = sp500_features(rows)
    buffer = io.StringIO()
    X.to_csv(buffer)
    return buffer.getvalue().encode()


def training_env(postgres, mlflow_server, registry_process, root) -> dict[str, str]:
    database = postgres.create_database(f"training_{uuid.uuid4().hex[:8]}")
    return {
        "MLMESH_TRAINING_DATABASE_URL": database.url("asyncpg"),
        "MLMESH_ARTIFACT_URI": f"file://{root / 'artifacts'}",
        "MLFLOW_TRACKING_URI": mlflow_server.url,
        "MLMESH_EXPERIMENTS_UPSTREAM": registry_process.address,
        "MLMESH_TRAINING_RAY_NUM_CPUS": "2",
        "MLMESH_GIT_COMMIT": "0123abcd",
    }


@pytest.fixture(scope="session")
def training_process(postgres, mlflow_server, registry_process, tmp_path_factory):
    root = tmp_path_factory.mktemp("training")
    process = ServiceProcess(
        "mlmesh_training",
        free_port(),
        training_env(postgres, mlflow_server, registry_process, root),
        root / "training.log",
    )
    process.start(timeout_s=120)
    yield process
    process.stop()


@pytest.fixture(scope="session")
def training_gateway(training_process, registry_process, tmp_path_factory):
    gateway = start_gateway(
        tmp_path_factory.mktemp("training-gw"),
        {"training": training_process.address, "experiments": registry_process.address},
    )
    yield gateway
    gateway.stop()


@pytest.fixture
def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def api(training_gateway, tenant) -> Client:
    return Client(training_gateway.base_url, tenant)


def upload(api: Client, data: bytes, **params) -> requests.Response:
    return api(
        "POST", "/api/v1/datasets", params=params, files={"file": ("table.csv", data, "text/csv")}
    )


@pytest.fixture
def spx(api) -> dict:
    """Bars and features of the S&P 500 uploaded by the test's tenant."""
    bars = upload(api, bars_csv(), kind="bars", symbol="SPX", name="spx-bars")
    features = upload(api, features_csv(), kind="features", symbol="SPX", name="spx-feat")
    assert bars.status_code == 201, bars.text
    assert features.status_code == 201, features.text
    return {"bars": bars.json(), "features": features.json()}
