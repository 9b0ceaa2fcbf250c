"""What training tests share: S&P 500 demo data (the demo's daily features and the next-day
return, offline: the prices ship with the `arch` package) as frames and CSV uploads, the
training service's environment, uploads over REST and gRPC, and error reasons."""

from __future__ import annotations

import io
import uuid
from functools import cache

import pandas as pd
import requests
from google.api import httpbody_pb2

from mlmesh.training.v1 import training_service_pb2 as pb
from tests.helpers.rest import Client
from tools.demo_training import sp500_tables

ROWS = 1500
# Rows of the CSV uploads.
UPLOAD_ROWS = 600


@cache
def _frame(rows: int) -> pd.DataFrame:
    bars, features = sp500_tables(rows + 40)
    target = (bars["close"].shift(-1) / bars["close"] - 1).rename("target")
    return features.join(target, how="inner").dropna().iloc[-rows:]


def sp500_bars(rows: int = ROWS) -> pd.DataFrame:
    """The daily bars (open, high, low, close, volume) behind `sp500_features(rows)`."""
    return sp500_tables(rows + 40)[0]


def sp500_features(rows: int = ROWS) -> tuple[pd.DataFrame, pd.Series]:
    """(X, y): features known at each day's close, and the return of the following day."""
    frame = _frame(rows)
    return frame.drop(columns="target").copy(), frame["target"].copy()


def train_test_split(
    fraction: float = 0.8, rows: int = ROWS
) -> tuple[pd.DataFrame, pd.Series, pd.DataFrame, pd.Series]:
    """Time-ordered split: the first `fraction` of rows to train on, the rest to predict."""
    X, y = sp500_features(rows)
    cut = int(len(X) * fraction)
    return X.iloc[:cut], y.iloc[:cut], X.iloc[cut:], y.iloc[cut:]


def bars_csv(rows: int = UPLOAD_ROWS) -> bytes:
    return sp500_bars(rows).to_csv().encode()


def features_csv(rows: int = UPLOAD_ROWS) -> bytes:
    X, _ = sp500_features(rows)
    buffer = io.StringIO()
    X.to_csv(buffer)
    return buffer.getvalue().encode()


def training_env(postgres, mlflow_server, registry_process, root) -> dict[str, str]:
    """The training service's environment: a new PostgreSQL database, artifacts under `root`,
    the real MLflow server and experiments service, a local Ray of 2 CPUs."""
    database = postgres.create_database(f"training_{uuid.uuid4().hex[:8]}")
    return {
        "MLMESH_TRAINING_DATABASE_URL": database.url("asyncpg"),
        "MLMESH_ARTIFACT_URI": f"file://{root / 'artifacts'}",
        "MLFLOW_TRACKING_URI": mlflow_server.url,
        "MLMESH_EXPERIMENTS_UPSTREAM": registry_process.address,
        "MLMESH_TRAINING_RAY_NUM_CPUS": "2",
        "MLMESH_GIT_COMMIT": "0123abcd",
    }


def upload(api: Client, data: bytes, **params) -> requests.Response:
    """A dataset upload over REST (multipart), with the query parameters `params`."""
    return api(
        "POST", "/api/v1/datasets", params=params, files={"file": ("table.csv", data, "text/csv")}
    )


def upload_grpc(stub, kind: str, data: bytes, metadata) -> str:
    """An SPX dataset uploaded over gRPC; its id."""
    request = pb.CreateDatasetRequest(
        kind=kind,
        symbol="SPX",
        upload=httpbody_pb2.HttpBody(content_type="text/csv", data=data),
    )
    return stub.CreateDataset(request, metadata=metadata).id


def reason(response: requests.Response) -> str:
    """The ErrorInfo reason of a REST error."""
    return response.json()["details"][0]["reason"]
