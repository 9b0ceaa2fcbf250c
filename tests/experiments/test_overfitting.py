"""POST /api/v1/experiments/runs/overfitting: runs that log daily returns, as a notebook would,
get the statistics that mlmesh_common.quant computes on the same series; over every store
backend through the service, and end to end through the real Envoy gateway."""

from __future__ import annotations

import math
import uuid

import numpy as np
import pytest
from arch.data import sp500

from mlmesh_common import quant
from mlmesh_common.errors import InvalidArgument, NotFound, PermissionDenied
from mlmesh_experiments.entities import MetricPoint
from tests.helpers.rest import Client

API = "/api/v1/experiments"
URL = f"{API}/runs/overfitting"
LOOKBACKS = (5, 10, 20, 40, 60, 120, 250)


def momentum_returns(days: int = 1200) -> tuple[np.ndarray, np.ndarray]:
    """A notebook's backtests: long or short the S&P 500 by the sign of its trailing return,
    one strategy per lookback, over the last `days` days. (bar times in ms, (days, lookbacks))."""
    close = sp500.load()["Adj Close"]
    daily = close.pct_change()
    columns = [np.sign(close.pct_change(n)).shift(1) * daily for n in LOOKBACKS]
    window = slice(len(close) - days, len(close))
    times = close.index[window].asi8 // 1_000_000
    return times, np.column_stack([c.to_numpy()[window] for c in columns])


def reason(response) -> str:
    (info,) = [d for d in response.json()["details"] if d["@type"].endswith("ErrorInfo")]
    return info["reason"]


# --- through the service, on every store backend -------------------------------------------


async def make_runs(service, tenant, series: dict[str, list[tuple]]):
    """One run per name logging its (step, value[, timestamp]) points of oos_return."""
    experiment = await service.create_experiment(tenant, {})
    ids = []
    for name, points in series.items():
        run = await service.create_run(tenant, experiment.id, name=name)
        metrics = [
            MetricPoint("oos_return", p[1], p[0], p[2] if len(p) > 2 else 1000 + p[0])
            for p in points
        ]
        await service.log_batch(tenant, run.id, metrics=metrics)
        ids.append(run.id)
    return experiment, ids


async def test_histories_align_on_common_steps(service, tenant):
    rng = np.random.default_rng(1)
    values = rng.normal(0.0005, 0.01, size=(60, 3))
    series = {f"run{j}": [(step, float(values[step, j])) for step in range(60)] for j in range(3)}
    series["run0"].append((60, 0.5))  # a step the others lack: left out
    series["run1"] = [p for p in series["run1"] if p[0] != 7]  # a step run1 lacks: left out
    series["run2"].append((3, math.nan))  # NaN points count as not logged
    series["run2"].insert(0, (11, values[11, 2], 5000))  # re-logged: the latest timestamp wins
    series["run2"][12] = (11, 9.0)  # the first point of step 11, at timestamp 1011
    _, ids = await make_runs(service, tenant, series)
    result = await service.run_overfitting(tenant, run_ids=ids, n_blocks=4)
    expected = quant.selection_bias(np.delete(values, 7, axis=0), 4)
    assert result.report.n_observations == 59
    assert np.array_equal(result.report.sharpe, expected.sharpe)
    assert np.array_equal(result.report.pbo.logits, expected.pbo.logits)
    assert (result.report.dsr, result.report.best) == (expected.dsr, expected.best)


async def test_experiment_and_filter_select_the_runs(service, tenant):
    rng = np.random.default_rng(2)
    series = {
        f"run{j}": [(s, float(v)) for s, v in enumerate(rng.normal(0, 0.01, 40))] for j in range(4)
    }
    experiment, ids = await make_runs(service, tenant, series)
    everything = await service.run_overfitting(tenant, experiment_id=experiment.id, n_blocks=2)
    assert sorted(everything.run_ids) == sorted(ids)
    picked = await service.run_overfitting(
        tenant, experiment_id=experiment.id, filter_text="attributes.run_name != 'run0'", n_blocks=2
    )
    assert sorted(picked.run_ids) == sorted(ids[1:])
    with pytest.raises(InvalidArgument, match="gives 1"):
        await service.run_overfitting(
            tenant, experiment_id=experiment.id, filter_text="attributes.run_name = 'run0'"
        )


async def test_bad_requests_are_rejected_before_any_statistic(service, tenant):
    rng = np.random.default_rng(3)
    series = {f"r{j}": [(s, float(v)) for s, v in enumerate(rng.normal(0, 0.01, 31))] for j in "ab"}
    series["flat"] = [(s, 0.0) for s in range(31)]
    experiment, ids = await make_runs(service, tenant, series)
    cases = [
        ({"run_ids": ids, "n_blocks": 3}, "INVALID_N_BLOCKS"),
        ({"run_ids": ids, "n_blocks": 0}, "INVALID_N_BLOCKS"),
        ({"run_ids": ids, "n_blocks": 40}, "INVALID_N_BLOCKS"),
        ({"run_ids": ids[:1]}, "INVALID_RUN_COUNT"),
        ({"run_ids": [ids[0], ids[0]]}, "DUPLICATE_IDS"),
        ({}, "MISSING_RUN_SELECTION"),
        ({"run_ids": ids, "experiment_id": experiment.id}, "AMBIGUOUS_RUN_SELECTION"),
        ({"run_ids": ids, "filter_text": "metrics.x > 1"}, "FILTER_WITHOUT_EXPERIMENT"),
        ({"run_ids": ids, "periods_per_year": 0.0}, "INVALID_PERIODS_PER_YEAR"),
        ({"run_ids": ids[:2]}, "TOO_FEW_OBSERVATIONS"),  # 31 < 2 x 16
        ({"run_ids": ids[:2], "metric_key": "sharpe"}, "METRIC_MISSING"),
    ]
    for kwargs, expected in cases:
        with pytest.raises(InvalidArgument) as error:
            await service.run_overfitting(tenant, **kwargs)
        assert error.value.reason == expected, kwargs
    with pytest.raises(InvalidArgument, match=f"run {ids[2]} has zero variance") as error:
        await service.run_overfitting(tenant, run_ids=ids, n_blocks=2)
    assert error.value.reason == "ZERO_VARIANCE"
    unknown = [str(uuid.uuid4()), "not-a-uuid"]
    with pytest.raises(NotFound) as missing:
        await service.run_overfitting(tenant, run_ids=[ids[0], *unknown])
    assert missing.value.metadata["run_ids"] == ",".join(unknown)
    with pytest.raises(PermissionDenied):
        await service.run_overfitting(f"{tenant}-other", run_ids=ids[:2])


# --- through the gateway --------------------------------------------------------------------


@pytest.fixture
def api(registry_gateway) -> Client:
    return Client(registry_gateway.base_url, f"t-{uuid.uuid4().hex[:10]}")


def log_returns(api, experiment_id: str, name: str, times, returns) -> str:
    run = api("POST", f"{API}/runs", json={"experiment_id": experiment_id, "name": name}).json()
    points = [
        {"key": "oos_return", "value": float(r), "step": step, "timestamp": int(t)}
        for step, (t, r) in enumerate(zip(times, returns, strict=True))
    ]
    logged = api("POST", f"{API}/runs/{run['id']}/log-batch", json={"metrics": points})
    assert logged.status_code == 200, logged.text
    return run["id"]


def test_notebook_runs_get_the_librarys_answer_through_the_gateway(api, registry_gateway):
    times, returns = momentum_returns()
    experiment = api("POST", API, json={"name": "spx-momentum"}).json()
    ids = [
        log_returns(api, experiment["id"], f"mom-{n}", times, returns[:, j])
        for j, n in enumerate(LOOKBACKS)
    ]
    response = api("POST", URL, json={"run_ids": ids})
    assert response.status_code == 200, response.text
    body = response.json()
    expected = quant.selection_bias(returns, 16)
    root = math.sqrt(252)
    assert (body["n_runs"], body["n_observations"], body["n_blocks"]) == (7, 1200, 16)
    assert body["n_combinations"] == 12_870 == len(body["logits"])
    assert np.allclose(body["logits"], expected.pbo.logits, rtol=1e-12, atol=0)
    assert body["pbo"] == pytest.approx(expected.pbo.pbo, abs=1e-15)
    assert body["prob_oos_loss"] == pytest.approx(expected.pbo.prob_oos_loss, abs=1e-15)
    degradation = expected.pbo.degradation
    assert body["degradation"] == pytest.approx(
        {"slope": degradation.slope, "intercept": degradation.intercept, "r2": degradation.r2},
        rel=1e-12,
    )
    assert [r["run_id"] for r in body["runs"]] == ids
    assert [r["sharpe"] for r in body["runs"]] == pytest.approx(expected.sharpe * root, rel=1e-12)
    assert [r["psr"] for r in body["runs"]] == pytest.approx(expected.psr, rel=1e-12)
    assert body["best_run_id"] == ids[expected.best]
    assert body["best_sharpe"] == pytest.approx(expected.sharpe[expected.best] * root, rel=1e-12)
    assert body["sr0"] == pytest.approx(expected.sr0 * root, rel=1e-12)
    assert body["dsr"] == pytest.approx(expected.dsr, rel=1e-12)
    assert (body["metric_key"], body["periods_per_year"]) == ("oos_return", 252)

    # The same runs chosen by experiment, in 8 blocks, annualized over 260 days.
    by_experiment = api(
        "POST",
        URL,
        json={"experiment_id": experiment["id"], "n_blocks": 8, "periods_per_year": 260},
    ).json()
    assert sorted(r["run_id"] for r in by_experiment["runs"]) == sorted(ids)
    assert by_experiment["pbo"] == pytest.approx(quant.pbo_cscv(returns, 8).pbo, abs=1e-15)
    assert by_experiment["best_sharpe"] == pytest.approx(
        expected.sharpe[expected.best] * math.sqrt(260), rel=1e-12
    )

    # The literal segment reaches its own RPC; the runs of another tenant are 403.
    assert api("GET", URL).status_code == 404  # GetRun of a run named "overfitting"
    theirs = Client(registry_gateway.base_url, "someone-else")
    forbidden = theirs("POST", URL, json={"run_ids": ids})
    assert forbidden.status_code == 403 and reason(forbidden) == "TENANT_MISMATCH"


def test_errors_through_the_gateway(api):
    experiment = api("POST", API, json={}).json()
    rng = np.random.default_rng(4)
    ids = [
        log_returns(api, experiment["id"], f"r{j}", range(20), rng.normal(0, 0.01, 20))
        for j in range(2)
    ]
    for body, expected in [
        ({"run_ids": ids, "n_blocks": 3}, "INVALID_N_BLOCKS"),
        ({"run_ids": ids, "n_blocks": 0}, "INVALID_N_BLOCKS"),
        ({"run_ids": ids[:1]}, "INVALID_RUN_COUNT"),
        ({"run_ids": ids}, "TOO_FEW_OBSERVATIONS"),  # 20 < 2 x 16
    ]:
        response = api("POST", URL, json=body)
        assert response.status_code == 400, (body, response.text)
        assert reason(response) == expected and response.json()["message"]
    assert api("POST", URL, json={"run_ids": ids, "n_blocks": 10}).status_code == 200
    unknown = str(uuid.uuid4())
    missing = api("POST", URL, json={"run_ids": [ids[0], unknown]})
    assert missing.status_code == 404 and unknown in missing.json()["message"]
    assert api("POST", URL, json={"run_ids": ids, "n_blocks": "x"}).status_code == 400
