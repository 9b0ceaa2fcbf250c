"""Tuning and AutoML end to end through the real gateway, on the real service with a local Ray of
two CPUs, PostgreSQL (Optuna's storage included) and the real MLflow server."""

from __future__ import annotations

import itertools
import time
import uuid

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from sklearn.metrics import mean_squared_error

from mlmesh_training import datasets as ds
from mlmesh_training.cv import CVConfig, split
from mlmesh_training.plugins import get_plugin
from tests.helpers.training import reason, sp500_bars, sp500_features

TUNE, AUTOML, TASKS = "/api/v1/models/tune", "/api/v1/models/automl", "/api/v1/tasks"
CV = {"method": "expanding", "n_splits": 4, "test_size": 0.1}
SPACE = {
    "max_depth": {"type": "int", "low": 2, "high": 6},
    "min_samples_leaf": {"type": "int", "low": 2, "high": 40, "log": True},
    "max_features": {"type": "categorical", "choices": [0.3, 0.6, 1.0]},
}


def tune_body(spx, **overrides) -> dict:
    body = {
        "plugin_key": "ml.random_forest",
        "dataset": {"feature_ids": [spx["features"]["id"]], "symbol": "SPX"},
        "cv": CV,
        "param_space": SPACE,
        "fixed_params": {"n_estimators": 15},
        "n_trials": 4,
        "seed": 3,
    }
    body.update(overrides)
    return body


def wait_task(api, task_id: str, until=lambda task: task["status"] not in ("PENDING", "RUNNING")):
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        task = api("GET", f"{TASKS}/{task_id}").json()
        if until(task):
            return task
        time.sleep(0.2)
    raise AssertionError(f"task {task_id} did not get there: {task}")


def recomputed_mean_mse(params: dict, seed: int, rows: int = 600) -> float:
    """The CV metric of a parameter set, recomputed here with scikit-learn."""
    close = sp500_bars(rows)["close"]
    X, _ = sp500_features(rows)
    data = ds.assemble(close, [("f", X)], target_horizon=1, start=None, end=None)
    plugin = get_plugin("ml.random_forest")
    errors = []
    for fold in split(len(data.X), CVConfig(**CV), 1):
        fitted = plugin.fit(data.X.iloc[fold.train], data.y.iloc[fold.train], params, seed)
        truth = data.y.iloc[fold.test].to_numpy()
        errors.append(mean_squared_error(truth, fitted.predict(data.X.iloc[fold.test])))
    return float(np.mean(errors))


def test_tune_runs_trials_in_parallel_and_records_the_study(api, spx, mlflow_server, tenant):
    response = api("POST", TUNE, json=tune_body(spx, max_parallel=2, study_name="par"))
    assert response.status_code == 200, response.text
    result = response.json()
    trials = result["trials"]
    assert result["n_trials_completed"] == 4 and len(trials) == 4
    assert {t["state"] for t in trials} == {"COMPLETE"}
    assert result["metric"] == "mean_mse" and result["direction"] == "minimize"
    # Two CPUs free: some two trials ran at the same time, in separate Ray tasks.
    overlapping = [
        (a["number"], b["number"])
        for a, b in itertools.combinations(trials, 2)
        if a["started_at"] < b["finished_at"] and b["started_at"] < a["finished_at"]
    ]
    assert overlapping, trials
    best = min(trials, key=lambda t: t["value"])
    assert result["best_value"] == best["value"] and result["best_trial"] == best["number"]
    assert result["best_params"]["n_estimators"] == 15
    for name in SPACE:
        assert result["best_params"][name] == best["params"][name]
    low, high = SPACE["min_samples_leaf"]["low"], SPACE["min_samples_leaf"]["high"]
    assert all(low <= t["params"]["min_samples_leaf"] <= high for t in trials)
    assert all(t["params"]["max_features"] in (0.3, 0.6, 1.0) for t in trials)
    # The best trial's metric is what scikit-learn computes for its parameters.
    assert result["best_value"] == pytest.approx(
        recomputed_mean_mse(result["best_params"], 3), rel=1e-9
    )

    client = MlflowClient(mlflow_server.url)
    parent = client.get_run(result["mlflow_run_id"])
    assert parent.data.tags["run_type"] == "tuning" and parent.info.status == "FINISHED"
    assert parent.data.tags["mlmesh.tenant"] == tenant
    assert parent.data.metrics["best_value"] == pytest.approx(result["best_value"])
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
    )
    assert sorted(int(r.data.tags["trial_number"]) for r in children) == [0, 1, 2, 3]
    assert {r.data.tags["run_type"] for r in children} == {"tuning_trial"}

    experiment = api("GET", f"/api/v1/experiments/{result['experiment_id']}").json()
    assert experiment["mlflow_run_id"] == parent.info.run_id
    assert experiment["tags"]["study_name"] == "par"
    assert experiment["metrics"]["mean_mse"] == pytest.approx(result["best_value"])


def test_maximized_metric_alias_picks_the_highest(api, spx):
    body = tune_body(spx, metric="directional_accuracy", n_trials=3)
    result = api("POST", TUNE, json=body).json()
    assert result["metric"] == "mean_directional_accuracy"
    assert result["direction"] == "maximize"
    assert result["best_value"] == max(t["value"] for t in result["trials"])
    explicit = api("POST", TUNE, json={**body, "direction": "minimize"}).json()
    assert explicit["direction"] == "minimize"
    assert explicit["best_value"] == min(t["value"] for t in explicit["trials"])


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (
            {"param_space": {"max_depth": {"type": "int", "low": 6, "high": 2}}},
            "INVALID_PARAM_SPEC",
        ),
        (
            {"param_space": {"max_features": {"type": "float", "low": 0, "high": 1, "log": True}}},
            "INVALID_PARAM_SPEC",
        ),
        (
            {"param_space": {"max_depth": {"type": "categorical", "choices": []}}},
            "INVALID_PARAM_SPEC",
        ),
        ({"param_space": {"depth": {"type": "int", "low": 1, "high": 3}}}, "UNKNOWN_PARAMETER"),
        (
            {"param_space": {"max_depth": {"type": "int", "low": 0, "high": 3}}},
            "INVALID_PARAM_SPEC",
        ),
        (
            {"param_space": {"max_depth": {"type": "cube", "low": 1, "high": 3}}},
            "INVALID_PARAM_SPEC",
        ),
        ({"fixed_params": {"max_depth": 3}}, "INVALID_PARAM_SPEC"),
        ({"fixed_params": {"n_estimators": -1}}, "INVALID_PARAMETER"),
        ({"metric": "sharpe"}, "INVALID_METRIC"),
        ({"direction": "up"}, "INVALID_DIRECTION"),
        ({"n_trials": 5000}, "INVALID_N_TRIALS"),
        ({"plugin_key": "ml.nope"}, "UNKNOWN_PLUGIN"),
        ({"plugin_key": "ens.mean", "param_space": {}, "fixed_params": {}}, "EMPTY_SEARCH_SPACE"),
        ({"study_name": "../etc"}, "INVALID_STUDY_NAME"),
        ({"timeout_s": -1}, "INVALID_TIMEOUT"),
        ({"max_parallel": -2}, "INVALID_MAX_PARALLEL"),
        ({"seed": -5}, "INVALID_SEED"),
    ],
)
def test_invalid_tune_requests_are_400_and_start_nothing(api, spx, change, why):
    body = tune_body(spx, **change)
    for path in (TUNE, f"{TUNE}/async"):
        response = api("POST", path, json=body)
        assert response.status_code == 400, response.text
        assert reason(response) == why
    assert api("GET", TASKS).json()["total"] == 0


def test_unknown_dataset_is_404_and_too_little_data_is_422(api, spx):
    missing = str(uuid.uuid4())
    body = tune_body(spx, dataset={"feature_ids": [missing], "symbol": "SPX"})
    assert api("POST", TUNE, json=body).status_code == 404
    short = tune_body(spx, dataset={**tune_body(spx)["dataset"], "end_date": "1990-01-20"})
    for path in (TUNE, f"{TUNE}/async", AUTOML, f"{AUTOML}/async"):
        response = api("POST", path, json=short)
        assert response.status_code in (400, 422), response.text


def test_sync_and_async_find_the_same_best_params_for_a_seed(api, spx):
    body = tune_body(spx, max_parallel=1, seed=11, n_trials=4)
    sync = api("POST", TUNE, json={**body, "study_name": "seeded-sync"}).json()
    accepted = api("POST", f"{TUNE}/async", json={**body, "study_name": "seeded-async"})
    assert accepted.status_code == 202, accepted.text
    task = wait_task(api, accepted.json()["task_id"])
    assert task["status"] == "SUCCEEDED", task
    assert task["kind"] == "tune" and task["progress"]["completed"] == 4
    result = task["result"]
    assert result["best_params"] == sync["best_params"]
    assert [t["params"] for t in result["trials"]] == [t["params"] for t in sync["trials"]]
    assert result["best_value"] == sync["best_value"]


def test_interrupted_study_resumes_with_exactly_the_missing_trials(api, spx):
    body = tune_body(spx, max_parallel=1, n_trials=6, study_name="resumable")
    accepted = api("POST", f"{TUNE}/async", json=body)
    assert accepted.status_code == 202, accepted.text
    task_id = accepted.json()["task_id"]
    running = wait_task(api, task_id, lambda t: t["progress"]["completed"] >= 2)
    assert running["status"] == "RUNNING" and running["progress"]["total"] == 6
    assert "best mean_mse" in running["progress"]["message"]
    cancelled = api("POST", f"{TASKS}/{task_id}/cancel")
    assert cancelled.json()["status"] == "CANCELLED"
    time.sleep(0.5)  # the driver marks its running trial interrupted as it stops
    resumed_at = time.time()
    response = api("POST", TUNE, json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    trials = result["trials"]
    complete = [t for t in trials if t["state"] == "COMPLETE"]
    before = [t for t in complete if _epoch(t["started_at"]) < resumed_at]
    after = [t for t in complete if _epoch(t["started_at"]) >= resumed_at]
    assert len(before) >= 2, trials
    assert len(complete) == result["n_trials_completed"] == 6
    assert len(after) == 6 - len(before)
    interrupted = [t for t in trials if t["state"] == "FAIL"]
    assert all(t["error"].startswith("interrupted") for t in interrupted)
    assert not [t for t in trials if t["state"] == "RUNNING"]
    # Done: asking again runs nothing more.
    again = api("POST", TUNE, json=body).json()
    assert len(again["trials"]) == len(trials)


def test_resuming_with_another_request_is_409(api, spx):
    body = tune_body(spx, n_trials=1, study_name="fixed-shape")
    assert api("POST", TUNE, json=body).status_code == 200
    other = api("POST", TUNE, json={**body, "metric": "mean_mae"})
    assert other.status_code == 409 and reason(other) == "STUDY_MISMATCH"
    assert "metric" in other.json()["message"]


def test_automl_leaderboard_ranks_in_the_metrics_direction(api, spx, mlflow_server):
    body = {
        "dataset": tune_body(spx)["dataset"],
        "cv": CV,
        "metric": "directional_accuracy",
        "seed": 5,
        "candidates": {
            "random_forest": {"n_estimators": 15, "max_depth": 3},
            "ml.lightgbm": {"n_estimators": 30},
            "ml.xgboost": {"n_estimators": 30, "max_depth": 2},
            # Passes its checks, fails on the data: the first fold has fewer rows than this.
            "dl.lstm": {"lookback": 512, "epochs": 1},
        },
        "ensemble_top_k": 2,
    }
    response = api("POST", AUTOML, json=body)
    assert response.status_code == 200, response.text
    board = response.json()
    assert board["metric"] == "mean_directional_accuracy" and board["direction"] == "maximize"
    rows = board["leaderboard"]
    ranked = [r for r in rows if r["rank"]]
    assert [r["rank"] for r in ranked] == list(range(1, len(ranked) + 1))
    scores = [r["score"] for r in ranked]
    assert scores == sorted(scores, reverse=True)
    for row in ranked:
        assert row["status"] == "SUCCEEDED" and row["fit_time_s"] > 0
        assert row["score"] == row["metrics"]["mean_directional_accuracy"]
    failed = rows[len(ranked) :]
    assert [r["plugin_key"] for r in failed] == ["dl.lstm"]
    assert failed[0]["status"] == "FAILED" and "lookback" in failed[0]["error"]
    ensemble = next(r for r in ranked if r["plugin_key"] == "ens.mean")
    members = [r["plugin_key"] for r in ranked if r["plugin_key"] != "ens.mean"][:2]
    assert sorted(ensemble["params"]["members"]) == sorted(members)
    assert len(ranked) == 4
    parent = MlflowClient(mlflow_server.url).get_run(board["mlflow_run_id"])
    assert parent.data.tags["run_type"] == "automl"
    assert parent.data.tags["best_plugin"] == ranked[0]["plugin_key"]


def test_automl_async_with_tuning_reports_progress(api, spx):
    body = {
        "dataset": tune_body(spx)["dataset"],
        "cv": CV,
        "candidates": {
            "ml.random_forest": {"n_estimators": 10},
            "ml.lightgbm": {"n_estimators": 20},
        },
        "tune_trials": 2,
        "seed": 1,
    }
    accepted = api("POST", f"{AUTOML}/async", json=body)
    assert accepted.status_code == 202, accepted.text
    task = wait_task(api, accepted.json()["task_id"])
    assert task["status"] == "SUCCEEDED", task
    assert task["kind"] == "automl" and task["progress"] == {
        "completed": 2,
        "total": 2,
        "message": "2/2 candidates evaluated",
    }
    rows = task["result"]["leaderboard"]
    assert [r["rank"] for r in rows] == [1, 2]
    assert all(r["n_trials"] == 2 for r in rows)
    assert rows[0]["score"] <= rows[1]["score"]  # mean_mse is minimized
    assert rows[0]["params"]["n_estimators"] in (10, 20)


def _epoch(rfc3339: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


def test_pruning_stops_trials_that_fall_behind_the_median(api, spx):
    # Two settings far apart: deep trees on single rows (noisy) or leaves of 250 rows (close to
    # the mean). After four trials, one of the worse setting is behind the median by fold 2.
    body = tune_body(
        spx,
        pruning=True,
        n_trials=10,
        max_parallel=1,
        seed=0,
        param_space={"min_samples_leaf": {"type": "categorical", "choices": [1, 250]}},
        fixed_params={"n_estimators": 10, "max_depth": None, "max_features": 1.0},
    )
    result = api("POST", TUNE, json=body).json()
    trials = result["trials"]
    assert result["n_trials_completed"] == 10
    assert {t["state"] for t in trials} == {"COMPLETE", "PRUNED"}, trials
    complete = [t for t in trials if t["state"] == "COMPLETE"]
    pruned = [t for t in trials if t["state"] == "PRUNED"]
    mean = {
        leaf: np.mean([t["value"] for t in complete if t["params"]["min_samples_leaf"] == leaf])
        for leaf in (1, 250)
    }
    worse = max(mean, key=mean.get)
    assert all(t["params"]["min_samples_leaf"] == worse for t in pruned)
    assert all(t["number"] >= 4 and not t["metrics"] for t in pruned)
    assert result["best_params"]["min_samples_leaf"] != worse


def test_timeout_stops_starting_trials(api, spx):
    body = tune_body(spx, n_trials=200, max_parallel=1, timeout_s=1.0)
    result = api("POST", TUNE, json=body).json()
    # Trials that started before the deadline finish; none starts after it.
    assert 1 <= result["n_trials_completed"] < 200
    assert len(result["trials"]) == result["n_trials_completed"]
    assert {t["state"] for t in result["trials"]} == {"COMPLETE"}
