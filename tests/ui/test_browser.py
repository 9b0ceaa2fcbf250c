"""The web UI in a real browser: Debian's chromium driven by Playwright (ui/e2e/browser.mjs)
against the built UI served by the real Envoy gateway, in front of the experiments service on
PostgreSQL. The data is created here through the API; the script checks the views against it.
Screenshots land in ui/test-results/ (kept as test artifacts)."""

from __future__ import annotations

import json
import math
import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.helpers.browser import RESULTS, built_ui, run_browser
from tests.helpers.gateway import start_gateway
from tests.helpers.rest import Client

# The live run's "equity": 3,000 points, one a second from this instant (epoch ms).
EQUITY_POINTS = 3000
EQUITY_START_MS = 1_700_000_000_000


@pytest.fixture(scope="module")
def ui_gateway(registry_process, tmp_path_factory):
    built_ui()
    gateway = start_gateway(
        tmp_path_factory.mktemp("ui-gw"), {"experiments": registry_process.address}
    )
    yield gateway
    gateway.stop()


def created(response) -> dict:
    assert response.status_code == 201, response.text
    return response.json()


def seed(api: Client, prefix: str) -> dict:
    """One experiment with three finished runs (histories, params of which one varies, an
    artifact) and a second experiment to archive; returns what the browser script checks."""
    experiment = created(
        api(
            "POST",
            "/api/v1/experiments",
            json={
                "name": f"{prefix}-momentum",
                "strategy_id": f"{prefix}-S1",
                "metrics": {"sharpe": 1.4, "mse": 0.021},
            },
        )
    )
    other = created(
        api(
            "POST",
            "/api/v1/experiments",
            json={
                "name": f"{prefix}-archivable",
                "strategy_id": f"{prefix}-S2",
                "metrics": {"sharpe": 1.1, "mse": 0.018},
            },
        )
    )
    runs = []
    for index, (lr, sharpe) in enumerate([("0.1", 1.2), ("0.01", 1.9), ("0.001", 0.7)]):
        run = created(
            api(
                "POST",
                "/api/v1/experiments/runs",
                json={"experiment_id": experiment["id"], "name": f"run-{index}"},
            )
        )
        loss = [
            {"key": "loss", "value": 1 / (step + 1) + 0.01 * index, "step": step}
            for step in range(500)
        ]
        batch = api(
            "POST",
            f"/api/v1/experiments/runs/{run['id']}/log-batch",
            json={
                "metrics": [
                    *loss,
                    {"key": "sharpe", "value": sharpe, "step": 0},
                    {"key": "mse", "value": 0.02 + 0.01 * math.sin(index), "step": 0},
                ],
                "params": [{"key": "lr", "value": lr}, {"key": "model", "value": "lightgbm"}],
                "tags": [{"key": "fold", "value": "purged"}],
            },
        )
        assert batch.status_code == 200, batch.text
        ended = api("POST", f"/api/v1/experiments/runs/{run['id']}/end", json={})
        assert ended.status_code == 200, ended.text
        runs.append(run["id"])
    upload = api(
        "POST",
        f"/api/v1/experiments/runs/{runs[0]}/log-artifact?artifact_path=reports",
        files={"file": ("report.json", b'{"ok": true}', "application/json")},
    )
    assert upload.status_code == 200, upload.text
    # A run still RUNNING, in an experiment of its own (the list checks count the others).
    live_experiment = created(
        api("POST", "/api/v1/experiments", json={"name": f"live-{uuid.uuid4().hex[:8]}"})
    )
    live = created(
        api("POST", "/api/v1/experiments/runs", json={"experiment_id": live_experiment["id"]})
    )
    batch = api(
        "POST",
        f"/api/v1/experiments/runs/{live['id']}/log-batch",
        json={"metrics": [{"key": "loss", "value": 1 / (s + 1), "step": s} for s in range(200)]},
    )
    assert batch.status_code == 200, batch.text
    # A longer history with wall-clock timestamps one second apart, for the time-axis zoom.
    for first in range(0, EQUITY_POINTS, 1000):
        batch = api(
            "POST",
            f"/api/v1/experiments/runs/{live['id']}/log-batch",
            json={
                "metrics": [
                    {
                        "key": "equity",
                        "value": math.sin(s / 50),
                        "step": s,
                        "timestamp": EQUITY_START_MS + 1000 * s,
                    }
                    for s in range(first, first + 1000)
                ]
            },
        )
        assert batch.status_code == 200, batch.text
    return {
        "experiment": experiment["id"],
        "other": other["id"],
        "runs": runs,
        "liveRun": live["id"],
        "equityStartMs": EQUITY_START_MS,
    }


def test_browser(ui_gateway):
    prefix = f"ui{uuid.uuid4().hex[:6]}"
    tenant, other_tenant = f"t-{prefix}-a", f"t-{prefix}-b"
    data = seed(Client(ui_gateway.base_url, tenant), prefix)
    created(
        Client(ui_gateway.base_url, other_tenant)(
            "POST", "/api/v1/experiments", json={"name": f"{prefix}-other-tenant"}
        )
    )
    run_browser(
        ui_gateway.base_url,
        "open",
        {**data, "prefix": prefix, "tenant": tenant, "otherTenant": other_tenant},
    )
    assert (RESULTS / "compare.png").stat().st_size > 10_000


def test_browser_with_jwt_auth(registry_process, tmp_path_factory):
    """MLMESH_AUTH=jwt: the page loads without a token, the API's 401 says so, and a token
    shows its tenant's experiments."""
    built_ui()
    workdir = tmp_path_factory.mktemp("ui-jwt")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwks = workdir / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "alg": "RS256", "use": "sig"}]}))
    gateway = start_gateway(
        workdir, {"experiments": registry_process.address}, auth="jwt", jwks_file=jwks
    )
    try:
        tenant = f"t-jwt-{uuid.uuid4().hex[:6]}"
        now = int(time.time())
        bearer = jwt.encode(
            {"sub": "alice", "tenant_id": tenant, "iat": now, "exp": now + 600},
            key,
            algorithm="RS256",
            headers={"kid": "k1"},
        )
        api = Client(gateway.base_url, tenant)
        api.session.headers["authorization"] = f"Bearer {bearer}"
        name = f"jwt-{uuid.uuid4().hex[:6]}"
        created(api("POST", "/api/v1/experiments", json={"name": name}))
        run_browser(gateway.base_url, "jwt", {"token": bearer, "name": name})
    finally:
        gateway.stop()
