"""Studies and leaderboards that know how many trials they ran, end to end through the real
gateway: every trial's stitched out-of-sample series recomputed here from refitted folds, its
Sharpe and PSR matched, and the PBO, SR0 and DSR matched against the statistics library on the
recomputed series (itself checked against a literal CSCV loop and the published examples)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from mlmesh_common import quant
from mlmesh_training import datasets as ds
from mlmesh_training.cv import CVConfig, split
from mlmesh_training.plugins import get_plugin
from tests.helpers.backtest import series_stats
from tests.helpers.training import reason, sp500_bars, sp500_features

TUNE, AUTOML = "/api/v1/models/tune", "/api/v1/models/automl"
CV = {"method": "expanding", "n_splits": 4, "test_size": 0.1}
TOL = 1e-9


def tune_body(spx, **overrides) -> dict:
    body = {
        "plugin_key": "ml.random_forest",
        "dataset": {"feature_ids": [spx["features"]["id"]], "symbol": "SPX"},
        "cv": CV,
        "param_space": {"max_depth": {"type": "int", "low": 2, "high": 6}},
        "fixed_params": {"n_estimators": 15},
        "n_trials": 4,
        "seed": 3,
        "max_parallel": 2,
        "backtest": {"cost_bps": 5},
    }
    return body | overrides


def stitched_pnl(plugin_key: str, params: dict, seed: int, cost_bps: float) -> dict:
    """The trial's folds refitted here; sign positions; one series over the test windows."""
    bars = sp500_bars(600)
    X, _ = sp500_features(600)
    data = ds.assemble(bars["close"], [("f", X)], target_horizon=1, start=None, end=None)
    close = bars["close"].to_numpy()
    where = bars["close"].index.get_indexer(data.X.index)
    r = close[where + 1] / close[where] - 1
    plugin = get_plugin(plugin_key)
    checked = plugin.check_params(params)
    held, rows = [], []
    for fold in split(len(data.X), CVConfig(**CV), 1):
        fitted = plugin.fit(data.X.iloc[fold.train], data.y.iloc[fold.train], checked, seed)
        held.append(np.sign(fitted.predict(data.X.iloc[fold.test])))
        rows.append(fold.test)
    rows = np.concatenate(rows)
    return series_stats(np.concatenate(held), r[rows], cost_bps, 252)


def test_a_study_reports_pbo_and_the_best_trials_dsr(api, spx, mlflow_server):
    response = api("POST", TUNE, json=tune_body(spx))
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["rank_by"] == "metric"
    trials = sorted(result["trials"], key=lambda t: t["number"])
    series = []
    for trial in trials:
        expected = stitched_pnl("ml.random_forest", trial["params"], 3, 5.0)
        assert trial["oos_sharpe"] == pytest.approx(expected["sharpe"], abs=TOL)
        assert trial["oos_psr"] == pytest.approx(expected["psr"], abs=TOL)
        series.append(expected["pnl"])
    report = quant.selection_bias(np.column_stack(series), 16)
    dsr = quant.probabilistic_sharpe(np.column_stack(series), report.sr0)
    pbo = result["pbo"]
    assert not pbo["unavailable_reason"]
    assert pbo["n_trials"] == 4 and pbo["n_observations"] == len(series[0])
    assert pbo["pbo"] == pytest.approx(report.pbo.pbo, abs=TOL)
    assert pbo["prob_oos_loss"] == pytest.approx(report.pbo.prob_oos_loss, abs=TOL)
    assert pbo["degradation"]["slope"] == pytest.approx(report.pbo.degradation.slope, abs=TOL)
    assert len(pbo["logits"]) == math.comb(16, 8)
    np.testing.assert_allclose(pbo["logits"], report.pbo.logits, rtol=0, atol=TOL)
    assert pbo["sr0"] == pytest.approx(report.sr0 * math.sqrt(252), abs=TOL)
    for trial, value in zip(trials, dsr, strict=True):
        assert trial["dsr"] == pytest.approx(value, abs=TOL)
    best = next(t for t in trials if t["number"] == result["best_trial"])
    assert result["best_sharpe"] == pytest.approx(best["oos_sharpe"], abs=TOL)
    assert result["best_psr"] == pytest.approx(best["oos_psr"], abs=TOL)
    assert result["best_dsr"] == pytest.approx(best["dsr"], abs=TOL)
    # The best by the metric is the lowest mean_mse, whatever its DSR.
    assert best["value"] == min(t["value"] for t in trials)
    parent = MlflowClient(mlflow_server.url).get_run(result["mlflow_run_id"])
    assert parent.data.metrics["pbo"] == pytest.approx(report.pbo.pbo, abs=TOL)
    assert parent.data.metrics["best_dsr"] == pytest.approx(best["dsr"], abs=TOL)
    assert parent.data.tags["rank_by"] == "metric"
    children = MlflowClient(mlflow_server.url).search_runs(
        [parent.info.experiment_id],
        f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
    )
    by_number = {int(c.data.tags["trial_number"]): c for c in children}
    for trial in trials:
        child = by_number[trial["number"]].data.metrics
        assert child["oos_sharpe"] == pytest.approx(trial["oos_sharpe"], abs=TOL)
    experiment = api("GET", f"/api/v1/experiments/{result['experiment_id']}").json()
    assert experiment["metrics"]["best_dsr"] == pytest.approx(best["dsr"], abs=TOL)
    assert experiment["metrics"]["pbo"] == pytest.approx(report.pbo.pbo, abs=TOL)

    # rank_by dsr on the same (resumed) study: the highest DSR wins, nothing is refitted.
    again = api("POST", TUNE, json=tune_body(spx, study_name=result["study_name"], rank_by="dsr"))
    assert again.status_code == 200, again.text
    chosen = again.json()
    top = max(trials, key=lambda t: t["dsr"])
    assert chosen["rank_by"] == "dsr" and chosen["best_trial"] == top["number"]
    assert chosen["best_dsr"] == pytest.approx(top["dsr"], abs=TOL)


def test_one_trial_says_why_there_is_no_pbo(api, spx):
    response = api("POST", TUNE, json=tune_body(spx, n_trials=1))
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["pbo"]["unavailable_reason"] == "TOO_FEW_TRIALS"
    assert "at least 2" in result["pbo"]["unavailable_message"]
    assert "pbo" not in result["pbo"] and "sr0" not in result["pbo"]
    assert "best_dsr" not in result and result["best_sharpe"] == result["trials"][0]["oos_sharpe"]


@pytest.mark.parametrize(
    "change",
    [{"rank_by": "sharpe"}, {"backtest": {"position": "short"}}, {"backtest": {"cost_bps": -2}}],
)
def test_bad_rank_by_or_backtest_is_400(api, spx, change):
    for url, body in (
        (TUNE, tune_body(spx, **change)),
        (AUTOML, {"dataset": tune_body(spx)["dataset"], "cv": CV, **change}),
    ):
        response = api("POST", url, json=body)
        assert response.status_code == 400, response.text
        assert reason(response) in ("INVALID_RANK_BY", "INVALID_BACKTEST")


def test_automl_rows_have_sharpe_psr_dsr_and_rank_by_dsr_orders_them(api, spx, mlflow_server):
    candidates = {
        "ml.random_forest": {"n_estimators": 15, "max_depth": 3},
        "ml.lightgbm": {"n_estimators": 20, "num_leaves": 7},
        "ml.xgboost": {"n_estimators": 20, "max_depth": 2},
    }
    body = {
        "dataset": tune_body(spx)["dataset"],
        "cv": CV,
        "candidates": candidates,
        "seed": 3,
        "backtest": {"cost_bps": 5},
        "rank_by": "dsr",
    }
    response = api("POST", AUTOML, json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    rows = result["leaderboard"]
    assert [r["rank"] for r in rows] == [1, 2, 3]
    series = {}
    for row in rows:
        expected = stitched_pnl(row["plugin_key"], row["params"], 3, 5.0)
        assert row["oos_sharpe"] == pytest.approx(expected["sharpe"], abs=TOL)
        assert row["oos_psr"] == pytest.approx(expected["psr"], abs=TOL)
        series[row["plugin_key"]] = expected["pnl"]
    keys = sorted(series)
    matrix = np.column_stack([series[k] for k in keys])
    report = quant.selection_bias(matrix, 16)
    dsr = dict(zip(keys, quant.probabilistic_sharpe(matrix, report.sr0), strict=True))
    assert [r["plugin_key"] for r in rows] == sorted(keys, key=lambda k: -dsr[k])
    for row in rows:
        assert row["dsr"] == pytest.approx(dsr[row["plugin_key"]], abs=TOL)
    assert result["pbo"]["pbo"] == pytest.approx(report.pbo.pbo, abs=TOL)
    assert result["best_dsr"] == pytest.approx(dsr[rows[0]["plugin_key"]], abs=TOL)
    parent = MlflowClient(mlflow_server.url).get_run(result["mlflow_run_id"])
    assert parent.data.metrics["pbo"] == pytest.approx(report.pbo.pbo, abs=TOL)
