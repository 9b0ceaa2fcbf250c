"""The training service (the session's process, tests/conftest.py) behind the real Envoy gateway,
with S&P 500 demo uploads."""

from __future__ import annotations

import uuid

import pytest

from tests.helpers.gateway import start_gateway
from tests.helpers.rest import Client
from tests.helpers.training import bars_csv, features_csv, upload


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


@pytest.fixture
def spx(api) -> dict:
    """Bars and features of the S&P 500 uploaded by the test's tenant."""
    bars = upload(api, bars_csv(), kind="bars", symbol="SPX", name="spx-bars")
    features = upload(api, features_csv(), kind="features", symbol="SPX", name="spx-feat")
    assert bars.status_code == 201, bars.text
    assert features.status_code == 201, features.text
    return {"bars": bars.json(), "features": features.json()}
