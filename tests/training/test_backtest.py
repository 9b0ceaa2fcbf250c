"""The backtest of a training's out-of-sample predictions, end to end through the real gateway:
every statistic recomputed here from the fold predictions and the bars, with plain numpy and
scipy loops (not mlmesh_common.quant), and the stitched series read back from MLflow and from
the experiments registry."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from mlmesh_training import datasets as ds
from mlmesh_training.cv import CVConfig, split
from mlmesh_training.plugins import get_plugin
from tests.helpers.backtest import series_stats
from tests.helpers.training import reason, sp500_bars, sp500_features

TOL = 1e-9
MODELS, TASKS = "/api/v1/models", "/api/v1/tasks"
FAST_PARAMS = {"n_estimators": 20, "max_depth": 3}


def create_model(api) -> dict:
    body = {"name": "rf", "model_type": "random_forest", "parameters": FAST_PARAMS}
    response = api("POST", MODELS, json=body)
    assert response.status_code == 201, response.text
    return response.json()


def train_body(spx, **overrides) -> dict:
    body = {
        "dataset": {"feature_ids": [spx["features"]["id"]], "symbol": "SPX", "target_horizon": 1},
        "cv": {"method": "expanding", "n_splits": 4, "test_size": 0.1},
        "seed": 7,
    }
    return body | overrides


def recompute(body: dict, cv: CVConfig, position: str, cost_bps: float, ppy: float) -> dict:
    """The backtest of the same folds, fitted here, as the issue defines it."""
    bars = sp500_bars(600)
    close = bars["close"]
    X, _ = sp500_features(600)
    assembled = ds.assemble(close, [("f", X)], target_horizon=1, start=None, end=None)
    values = close.to_numpy()
    where = close.index.get_indexer(assembled.X.index)
    next_return = values[where + 1] / values[where] - 1
    plugin = get_plugin("ml.random_forest")
    folds = split(len(assembled.X), cv, 1)
    held = {}
    for fold in folds:
        fitted = plugin.fit(
            assembled.X.iloc[fold.train], assembled.y.iloc[fold.train], FAST_PARAMS, body["seed"]
        )
        pred = np.asarray(fitted.predict(assembled.X.iloc[fold.test]), dtype=float)
        if position == "sign":
            held[fold.index] = np.sign(pred)
        elif position == "long_only":
            held[fold.index] = np.where(pred > 0, 1.0, 0.0)
        else:
            scale = np.std(fitted.predict(assembled.X.iloc[fold.train]), ddof=1)
            held[fold.index] = np.clip(pred / scale, -1, 1)
    per_fold = [series_stats(held[f.index], next_return[f.test], cost_bps, ppy) for f in folds]
    rows = np.concatenate([f.test for f in folds])
    stitched = series_stats(
        np.concatenate([held[f.index] for f in folds]), next_return[rows], cost_bps, ppy
    )
    return {
        "folds": per_fold,
        "stitched": stitched,
        "rows": rows,
        "bars": where[rows],
        "times": assembled.X.index[rows],
    }


STATS = ("sharpe", "sortino", "max_drawdown", "calmar", "total_return", "hit_rate", "turnover")


def check_stats(got: dict, expected: dict) -> None:
    for name in STATS:
        assert float(got[name]) == pytest.approx(expected[name], abs=TOL), name
    assert got["n_bars"] == expected["n_bars"]


@pytest.mark.parametrize(
    ("position", "cost_bps"), [("sign", 5.0), ("proportional", 2.5), ("long_only", 0.0)]
)
def test_training_backtest_matches_an_independent_recomputation(
    api, spx, mlflow_server, position, cost_bps
):
    model = create_model(api)
    body = train_body(spx, backtest={"position": position, "cost_bps": cost_bps})
    response = api("POST", f"{MODELS}/{model['id']}/train", json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    backtest = result["backtest"]
    assert backtest["position"] == position and backtest["periods_per_year"] == 252
    expected = recompute(
        body, CVConfig(method="expanding", n_splits=4, test_size=0.1), position, cost_bps, 252
    )
    assert [f["fold"] for f in backtest["folds"]] == [0, 1, 2, 3]
    for got, want in zip(backtest["folds"], expected["folds"], strict=True):
        check_stats(got["stats"], want)
    stitched = expected["stitched"]
    check_stats(backtest["stitched"], stitched)
    assert backtest["psr"] == pytest.approx(stitched["psr"], abs=TOL)

    # The model's metrics, the MLflow run and the Experiment record carry the same statistics.
    updated = api("GET", f"{MODELS}/{model['id']}").json()
    assert updated["metrics"]["oos_sharpe"] == pytest.approx(stitched["sharpe"], abs=TOL)
    assert updated["metrics"]["oos_psr"] == pytest.approx(stitched["psr"], abs=TOL)
    client = MlflowClient(mlflow_server.url)
    run = client.get_run(result["mlflow_run_id"])
    assert run.data.metrics["oos_max_drawdown"] == pytest.approx(stitched["max_drawdown"], abs=TOL)
    assert run.data.params["backtest.position"] == position
    fold_sharpes = client.get_metric_history(run.info.run_id, "fold_oos_sharpe")
    assert [m.step for m in sorted(fold_sharpes, key=lambda m: m.step)] == [0, 1, 2, 3]
    for metric in fold_sharpes:
        assert metric.value == pytest.approx(expected["folds"][metric.step]["sharpe"], abs=TOL)
    history = sorted(client.get_metric_history(run.info.run_id, "oos_return"), key=lambda m: m.step)
    assert [m.step for m in history] == [int(b) for b in expected["bars"]]
    assert [m.timestamp for m in history] == [ds.epoch_ms(t) for t in expected["times"]]
    np.testing.assert_allclose([m.value for m in history], stitched["pnl"], rtol=0, atol=TOL)
    experiment = api("GET", f"/api/v1/experiments/{result['experiment_id']}").json()
    assert experiment["metrics"]["oos_total_return"] == pytest.approx(
        stitched["total_return"], abs=TOL
    )

    # The registry run holds the same histories, under the training's Experiment.
    registry_run = result["registry_run_id"]
    run_info = api("GET", f"/api/v1/experiments/runs/{registry_run}").json()
    assert run_info["experiment_id"] == result["experiment_id"]
    for key, values in (("oos_return", stitched["pnl"]), ("oos_equity", stitched["equity"])):
        points = api("GET", f"/api/v1/experiments/runs/{registry_run}/metrics/{key}/history")
        assert points.status_code == 200, points.text
        got = points.json()["points"]
        assert [int(p["step"]) for p in got] == [int(b) for b in expected["bars"]]
        np.testing.assert_allclose([p["value"] for p in got], values, rtol=0, atol=TOL)


def test_cpcv_backtest_paths(api, spx):
    model = create_model(api)
    cv = {"method": "cpcv", "n_splits": 5, "n_test_splits": 2}
    body = train_body(spx, cv=cv, backtest={"cost_bps": 1})
    response = api("POST", f"{MODELS}/{model['id']}/train", json=body)
    assert response.status_code == 200, response.text
    paths = response.json()["backtest"]["cpcv"]
    assert paths["n_paths"] == math.comb(4, 1) == len(paths["sharpes"])
    # Brute force here: split s tests groups combinations[s]; path j takes group g from the
    # j-th split that tests g; a path is one series over the groups in time order.
    config = CVConfig(method="cpcv", n_splits=5, n_test_splits=2)
    bars = sp500_bars(600)
    X, _ = sp500_features(600)
    assembled = ds.assemble(bars["close"], [("f", X)], target_horizon=1, start=None, end=None)
    close = bars["close"].to_numpy()
    where = bars["close"].index.get_indexer(assembled.X.index)
    r = close[where + 1] / close[where] - 1
    n = len(assembled.X)
    edges = [g * n // 5 for g in range(6)]
    plugin = get_plugin("ml.random_forest")
    combos = list(itertools.combinations(range(5), 2))
    signs = {}
    for s, fold in enumerate(split(n, config, 1)):
        assert fold.test_groups == combos[s]
        fitted = plugin.fit(
            assembled.X.iloc[fold.train], assembled.y.iloc[fold.train], FAST_PARAMS, body["seed"]
        )
        for g in fold.test_groups:
            rows = np.arange(edges[g], edges[g + 1])
            signs[s, g] = np.sign(fitted.predict(assembled.X.iloc[rows]))
    expected = []
    for j in range(4):
        held = np.concatenate(
            [signs[[s for s, c in enumerate(combos) if g in c][j], g] for g in range(5)]
        )
        sharpe = series_stats(held, r[: edges[5]], 1.0, 252)["sharpe"]
        expected.append(sharpe)
    np.testing.assert_allclose(paths["sharpes"], expected, rtol=0, atol=TOL)
    d = paths["sharpe_distribution"]
    assert d["mean"] == pytest.approx(np.mean(expected), abs=TOL)
    assert d["std"] == pytest.approx(np.std(expected, ddof=1), abs=TOL)
    assert d["min"] == pytest.approx(min(expected), abs=TOL)
    assert d["q50"] == pytest.approx(np.median(expected), abs=TOL)


@pytest.mark.parametrize(
    ("backtest", "field"),
    [
        ({"position": "short_only"}, "position"),
        ({"cost_bps": -1}, "cost_bps"),
        ({"cost_bps": "NaN"}, "cost_bps"),
        ({"periods_per_year": 0}, "periods_per_year"),
        ({"periods_per_year": "Infinity"}, "periods_per_year"),
    ],
)
def test_bad_backtest_sections_are_400_before_any_work(api, spx, backtest, field):
    model = create_model(api)
    for path in ("train", "train/async"):
        response = api(
            "POST", f"{MODELS}/{model['id']}/{path}", json=train_body(spx, backtest=backtest)
        )
        assert response.status_code == 400, response.text
        assert reason(response) == "INVALID_BACKTEST"
        assert response.json()["details"][0]["metadata"]["field"] == field
    assert api("GET", f"{MODELS}/{model['id']}").json()["version"] == 1
    assert api("GET", TASKS).json()["total"] == 0


def test_an_unknown_timeframe_needs_periods_per_year(api, spx):
    model = create_model(api)
    body = train_body(spx, backtest={})
    body["dataset"] = {**body["dataset"], "timeframe": "1M"}
    response = api("POST", f"{MODELS}/{model['id']}/train", json=body)
    assert response.status_code == 400 and reason(response) == "INVALID_BACKTEST"
    assert "periods_per_year" in response.json()["message"]
