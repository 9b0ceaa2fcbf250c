"""The training service end to end through the real gateway: datasets, models, synchronous and
asynchronous training with every side effect checked, and metrics recomputed independently."""

from __future__ import annotations

import itertools
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from sklearn.metrics import accuracy_score, mean_absolute_error, mean_squared_error

from mlmesh_training import datasets as ds
from mlmesh_training.cv import CVConfig, split
from mlmesh_training.plugins import get_plugin
from tests.helpers.rest import Client
from tests.helpers.training import (
    bars_csv,
    features_csv,
    reason,
    sp500_bars,
    sp500_features,
    upload,
)

MODELS, DATASETS, TASKS = "/api/v1/models", "/api/v1/datasets", "/api/v1/tasks"
FAST_PARAMS = {"n_estimators": 20, "max_depth": 3}


def create_model(api, **body) -> dict:
    body = {"name": "rf", "model_type": "random_forest", "parameters": FAST_PARAMS, **body}
    response = api("POST", MODELS, json=body)
    assert response.status_code == 201, response.text
    return response.json()


def train_body(spx, **overrides) -> dict:
    body = {
        "dataset": {"feature_ids": [spx["features"]["id"]], "symbol": "SPX", "target_horizon": 1},
        "cv": {"method": "expanding", "n_splits": 4, "test_size": 0.1},
        "strategy_id": "S-mom",
        "seed": 7,
    }
    body.update(overrides)
    return body


def test_dataset_upload_dedupe_preview_and_list(api, spx):
    bars = spx["bars"]
    assert bars["kind"] == "bars" and "close" in bars["columns"] and bars["row_count"] > 600
    assert bars["start_date"] < bars["end_date"] and len(bars["version_hash"]) == 64
    again = upload(api, bars_csv(), kind="bars", symbol="SPX", name="spx-bars")
    assert again.status_code == 200 and again.json() == bars
    preview = api("GET", f"{DATASETS}/{spx['features']['id']}/preview", params={"rows": 3}).json()
    assert len(preview["rows"]) == 3 and "timestamp" in preview["rows"][0]
    listed = api("GET", DATASETS, params={"kind": "features"}).json()
    assert [d["id"] for d in listed["datasets"]] == [spx["features"]["id"]]
    raw = api(
        "POST",
        DATASETS,
        params={"kind": "features", "symbol": "RAW"},
        data=features_csv(50),
        headers={"content-type": "text/csv"},
    )
    assert raw.status_code == 201, raw.text


def test_identical_bytes_under_other_metadata_are_other_datasets(api, tenant, training_process):
    data = bars_csv()
    first = upload(api, data, kind="bars", symbol="AAA")
    other_symbol = upload(api, data, kind="bars", symbol="BBB")
    other_kind = upload(api, data, kind="features", symbol="BBB")
    other_timeframe = upload(api, data, kind="bars", symbol="AAA", timeframe="1h")
    other_name = upload(api, data, kind="bars", symbol="AAA", name="aaa-copy")
    created = [first, other_symbol, other_kind, other_timeframe, other_name]
    assert [r.status_code for r in created] == [201] * 5, [r.text for r in created]
    records = [r.json() for r in created]
    assert len({r["id"] for r in records}) == 5
    assert [(r["kind"], r["symbol"], r["timeframe"]) for r in records] == [
        ("bars", "AAA", "1d"),
        ("bars", "BBB", "1d"),
        ("features", "BBB", "1d"),
        ("bars", "AAA", "1h"),
        ("bars", "AAA", "1d"),
    ]
    assert len({r["version_hash"] for r in records}) == 1
    # Identical bytes and metadata: the existing record, 200, nothing new stored.
    again = upload(api, data, kind="bars", symbol="BBB")
    assert again.status_code == 200 and again.json() == records[1]
    assert "location" not in again.headers
    listed = api("GET", DATASETS, params={"limit": 100}).json()
    assert listed["total"] == 5
    # One stored table per content and kind, shared by the records: no orphan folders.
    root = training_process.log_path.parent / "artifacts" / tenant / "datasets"
    tables = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    digest = records[0]["version_hash"]
    assert tables == [f"{digest}/bars.parquet", f"{digest}/features.parquet"]
    # The BBB bars train BBB models (the upload was not merged into AAA's).
    model = create_model(api)
    body = train_body({"features": records[2]})
    body["dataset"]["symbol"] = "BBB"
    trained = api("POST", f"{MODELS}/{model['id']}/train", json=body)
    assert trained.status_code == 200, trained.text
    assert trained.json()["bars_id"] == records[1]["id"]


def test_the_bars_dataset_a_training_uses_is_named(api, spx, mlflow_server):
    older = spx["bars"]
    newer = upload(api, bars_csv(650), kind="bars", symbol="SPX", name="spx-bars-650")
    assert newer.status_code == 201, newer.text
    newer = newer.json()
    model = create_model(api)
    url = f"{MODELS}/{model['id']}/train"
    # Without bars_id, the newest bars of the symbol and timeframe.
    default = api("POST", url, json=train_body(spx)).json()
    assert (default["bars_id"], default["bars_version_hash"]) == (
        newer["id"],
        newer["version_hash"],
    )
    body = train_body(spx)
    body["dataset"]["bars_id"] = older["id"]
    chosen = api("POST", url, json=body)
    assert chosen.status_code == 200, chosen.text
    chosen = chosen.json()
    assert (chosen["bars_id"], chosen["bars_version_hash"]) == (older["id"], older["version_hash"])
    run = MlflowClient(mlflow_server.url).get_run(chosen["mlflow_run_id"])
    assert run.data.tags["bars_id"] == older["id"]
    assert run.data.tags["dataset_version"] == older["version_hash"][:16]
    experiment = api("GET", f"/api/v1/experiments/{chosen['experiment_id']}").json()
    assert experiment["tags"]["bars_id"] == older["id"]
    assert experiment["dataset_version"] == older["version_hash"][:16]
    # A bars_id that is not bars, of another symbol, or unknown.
    for bars_id, symbol, status, why in [
        (spx["features"]["id"], "SPX", 400, "NOT_A_BARS_DATASET"),
        (older["id"], "QQQ", 400, "BARS_MISMATCH"),
        (str(uuid.uuid4()), "SPX", 404, "DATASET_NOT_FOUND"),
    ]:
        body["dataset"].update(bars_id=bars_id, symbol=symbol)
        refused = api("POST", url, json=body)
        assert refused.status_code == status and reason(refused) == why, refused.text
    assert api("GET", f"{MODELS}/{model['id']}").json()["version"] == 3


def test_library_parameters_reach_the_trained_model(api, spx, mlflow_server):
    parameters = {
        **FAST_PARAMS,
        "random_state": 11,
        "min_samples_split": 4,
        "criterion": "absolute_error",
    }
    model = create_model(api, parameters=parameters)
    assert model["parameters"] == parameters
    trained = api("POST", f"{MODELS}/{model['id']}/train", json=train_body(spx, seed=3))
    assert trained.status_code == 200, trained.text
    result = trained.json()
    fitted = get_plugin("ml.random_forest").load(
        Path(result["artifact_uri"].removeprefix("file://")).read_bytes()
    )
    tree = fitted.estimator.estimators_[0]
    assert (tree.min_samples_split, tree.criterion) == (4, "absolute_error")
    assert fitted.estimator.random_state == 11
    # The user's random_state won over the request's seed, and the run says so.
    run = MlflowClient(mlflow_server.url).get_run(result["mlflow_run_id"])
    assert run.data.params["seed"] == "11"
    unknown = api(
        "POST",
        MODELS,
        json={"name": "m", "model_type": "random_forest", "parameters": {"colour": "red"}},
    )
    assert unknown.status_code == 400 and reason(unknown) == "UNKNOWN_PARAMETER"
    assert "sklearn.ensemble.RandomForestRegressor" in unknown.json()["message"]
    bad = api(
        "POST",
        MODELS,
        json={"name": "m", "model_type": "xgboost", "parameters": {"tree_method": "bogus"}},
    )
    assert bad.status_code == 400 and reason(bad) == "INVALID_PARAMETER_VALUE"
    assert "bogus" in bad.json()["message"]


@pytest.mark.parametrize(
    ("data", "params", "why"),
    [
        (b"timestamp,open\n2020-01-01,1\n2020-01-02,2\n", {"kind": "bars"}, "MISSING_CLOSE"),
        (b"a,b\n1,2\n", {"kind": "features"}, "MISSING_TIMESTAMP"),
        (b"timestamp,x\n2020-01-01,abc\n", {"kind": "features"}, "NON_NUMERIC_COLUMNS"),
        (b"timestamp,x\n2020-01-01,1\n", {"kind": "nonsense"}, "INVALID_KIND"),
    ],
)
def test_bad_uploads_are_400(api, data, params, why):
    response = upload(api, data, symbol="BAD", **params)
    assert response.status_code == 400, response.text
    assert reason(response) == why


def test_model_crud_and_optimistic_locking(api):
    model = create_model(api, model_type="ml.xgboost", family="machine_learning", parameters={})
    assert model["plugin_key"] == "ml.xgboost" and model["version"] == 1
    url = f"{MODELS}/{model['id']}"
    patched = api("PATCH", url, json={"parameters": {"max_depth": 4}, "version": 1})
    assert patched.status_code == 200 and patched.json()["version"] == 2
    assert patched.json()["parameters"] == {"max_depth": 4}
    stale = api("PATCH", url, json={"name": "x", "version": 1})
    assert stale.status_code == 409 and reason(stale) == "VERSION_MISMATCH"
    bad_param = api("PATCH", url, json={"parameters": {"colour": "red"}})
    assert bad_param.status_code == 400 and reason(bad_param) == "UNKNOWN_PARAMETER"
    assert api("DELETE", url).status_code == 204
    assert api("GET", url).status_code == 404


def test_model_type_is_validated_against_the_family(api):
    unknown = api("POST", MODELS, json={"name": "m", "model_type": "prophet"})
    assert unknown.status_code == 400 and "ml.xgboost" in unknown.json()["message"]
    mismatch = api(
        "POST", MODELS, json={"name": "m", "model_type": "xgboost", "family": "statistical"}
    )
    assert mismatch.status_code == 400 and "stat.arima" in mismatch.json()["message"]


def test_plugins_and_search_spaces(api):
    plugins = api("GET", f"{MODELS}/plugins/available").json()["plugins"]
    keys = {p["key"] for p in plugins}
    assert keys == {
        "stat.arima",
        "stat.garch",
        "ml.xgboost",
        "ml.lightgbm",
        "ml.catboost",
        "ml.random_forest",
        "dl.lstm",
        "ens.mean",
        "ens.stacking",
    }
    spaces = api("GET", f"{MODELS}/plugins/search-spaces").json()["search_spaces"]
    assert spaces["ml.lightgbm"]["params"]["num_leaves"]["type"] == "int"


def expected_fold_metrics(spx_rows: int, body: dict) -> list[tuple[float, float, float]]:
    """The same folds recomputed here: the same data, split and model, scored by scikit-learn."""
    close = sp500_bars(spx_rows)["close"]
    X, _ = sp500_features(spx_rows)
    assembled = ds.assemble(close, [("f", X)], target_horizon=1, start=None, end=None)
    cv = CVConfig(method="expanding", n_splits=4, test_size=0.1)
    plugin = get_plugin("ml.random_forest")
    results = []
    for fold in split(len(assembled.X), cv, 1):
        fitted = plugin.fit(
            assembled.X.iloc[fold.train], assembled.y.iloc[fold.train], FAST_PARAMS, body["seed"]
        )
        pred = fitted.predict(assembled.X.iloc[fold.test])
        truth = assembled.y.iloc[fold.test].to_numpy()
        results.append(
            (
                mean_squared_error(truth, pred),
                mean_absolute_error(truth, pred),
                accuracy_score(np.sign(truth), np.sign(pred)),
            )
        )
    return results


def test_sync_training_end_to_end(api, spx, mlflow_server, tenant):
    model = create_model(api)
    body = train_body(spx)
    response = api("POST", f"{MODELS}/{model['id']}/train", json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    cv = result["cv_metrics"]
    assert cv["n_folds"] == 4 and len(cv["folds"]) == 4
    folds = cv["folds"]
    for earlier, later in itertools.pairwise(folds):
        assert earlier["test_end"] < later["test_start"]
    for fold in folds:
        assert fold["train_end"] < fold["test_start"]
    expected = expected_fold_metrics(600, body)
    for fold, (mse, mae, da) in zip(folds, expected, strict=True):
        assert fold["mse"] == pytest.approx(mse, abs=1e-9)
        assert fold["mae"] == pytest.approx(mae, abs=1e-9)
        assert fold["directional_accuracy"] == pytest.approx(da, abs=1e-9)
    assert cv["mean_mse"] == pytest.approx(np.mean([m for m, _, _ in expected]), abs=1e-12)
    assert result["feature_columns"] == [
        "ret_lag_1",
        "ret_lag_5",
        "ret_lag_20",
        "vol_20",
        "mom_20",
        "rsi_14",
    ]

    # Side effects: the model, its artifact, the MLflow run and the Experiment record.
    updated = api("GET", f"{MODELS}/{model['id']}").json()
    assert updated["version"] == 2 == result["model_version"]
    assert updated["artifact_uri"] == result["artifact_uri"]
    assert updated["mlflow_run_id"] == result["mlflow_run_id"]
    assert updated["metrics"]["mean_mse"] == pytest.approx(cv["mean_mse"])
    path = result["artifact_uri"].removeprefix("file://")
    loaded = get_plugin("ml.random_forest").load(Path(path).read_bytes())
    assert loaded.plugin_key == "ml.random_forest"
    run = MlflowClient(mlflow_server.url).get_run(result["mlflow_run_id"])
    assert run.data.tags["run_type"] == "training"
    assert run.data.tags["strategy_id"] == "S-mom"
    assert run.data.tags["git_commit"] == "0123abcd"
    assert run.data.tags["model_version"] == "2"
    assert run.data.tags["mlmesh.tenant"] == tenant
    assert run.data.tags["dataset_version"] and run.data.tags["feature_version"]
    history = MlflowClient(mlflow_server.url).get_metric_history(run.info.run_id, "fold_mse")
    assert sorted(m.step for m in history) == [0, 1, 2, 3]
    experiment = api("GET", f"/api/v1/experiments/{result['experiment_id']}").json()
    assert experiment["mlflow_run_id"] == result["mlflow_run_id"]
    assert experiment["model_version"] == "2" and experiment["strategy_id"] == "S-mom"

    # The same request again gives identical metrics.
    again = api("POST", f"{MODELS}/{model['id']}/train", json=body).json()
    assert again["cv_metrics"]["folds"] == folds
    assert again["model_version"] == 3


def test_async_training_reports_progress_and_matches_sync(api, spx):
    model = create_model(api)
    body = train_body(spx)
    accepted = api("POST", f"{MODELS}/{model['id']}/train/async", json=body)
    assert accepted.status_code == 202, accepted.text
    task = accepted.json()
    assert task["status"] in ("PENDING", "RUNNING")
    assert accepted.headers["location"] == f"{TASKS}/{task['task_id']}"
    seen = set()
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        task = api("GET", f"{TASKS}/{task['task_id']}").json()
        seen.add(task["status"])
        if task["status"] in ("SUCCEEDED", "FAILED"):
            break
        time.sleep(0.2)
    assert task["status"] == "SUCCEEDED", task
    assert task["progress"]["completed"] == task["progress"]["total"] == 5
    sync = api("POST", f"{MODELS}/{model['id']}/train", json=body).json()
    assert task["result"]["cv_metrics"]["folds"] == sync["cv_metrics"]["folds"]
    listed = api("GET", TASKS, params={"kind": "train"}).json()
    assert [t["task_id"] for t in listed["tasks"]] == [task["task_id"]]
    cancel_done = api("POST", f"{TASKS}/{task['task_id']}/cancel", json={})
    assert cancel_done.status_code == 400 and reason(cancel_done) == "TASK_ALREADY_DONE"


@pytest.mark.parametrize("path", ["train", "train/async"])
def test_training_validation_is_the_same_sync_and_async(api, spx, path):
    model = create_model(api)
    url = f"{MODELS}/{model['id']}/{path}"
    missing = [str(uuid.uuid4()), str(uuid.uuid4())]
    unknown = api(
        "POST", url, json=train_body(spx, dataset={"feature_ids": missing, "symbol": "SPX"})
    )
    assert unknown.status_code == 404 and all(i in unknown.json()["message"] for i in missing)
    short = train_body(spx)
    short["dataset"] = {**short["dataset"], "start_date": "2018-12-01", "end_date": "2018-12-20"}
    too_little = api("POST", url, json=short)
    assert too_little.status_code == 422 and reason(too_little) == "TOO_LITTLE_DATA"
    backwards = train_body(spx)
    backwards["dataset"] = {
        **backwards["dataset"],
        "start_date": "2019-01-01",
        "end_date": "2018-01-01",
    }
    assert api("POST", url, json=backwards).status_code == 400
    bad_cv = api("POST", url, json=train_body(spx, cv={"method": "random"}))
    assert bad_cv.status_code == 400
    no_bars = train_body(spx)
    no_bars["dataset"] = {**no_bars["dataset"], "symbol": "NOPE"}
    assert api("POST", url, json=no_bars).status_code == 404
    assert api("GET", TASKS).json()["total"] == 0


def test_unknown_and_foreign_ids(api, training_gateway):
    assert api("GET", f"{TASKS}/{uuid.uuid4()}").status_code == 404
    assert api("GET", f"{MODELS}/{uuid.uuid4()}").status_code == 404
    assert api("GET", f"{DATASETS}/nope").status_code == 404
    theirs = create_model(Client(training_gateway.base_url, "someone-else"))
    assert api("GET", f"{MODELS}/{theirs['id']}").status_code == 403
    assert api("POST", f"{MODELS}/{theirs['id']}/train", json={}).status_code == 403


def test_cancel_a_running_task(api, spx):
    model = create_model(
        api, name="slow", model_type="lstm", parameters={"epochs": 300, "hidden_size": 64}
    )
    task = api("POST", f"{MODELS}/{model['id']}/train/async", json=train_body(spx)).json()
    cancelled = api("POST", f"{TASKS}/{task['task_id']}/cancel", json={})
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "CANCELLED" and cancelled.json()["finished_at"]
    time.sleep(1)
    after = api("GET", f"{TASKS}/{task['task_id']}").json()
    assert after["status"] == "CANCELLED"
    # The cancelled training never touched the model.
    assert api("GET", f"{MODELS}/{model['id']}").json()["version"] == 1
    listed = api("GET", TASKS, params={"status": "CANCELLED"}).json()
    assert [t["task_id"] for t in listed["tasks"]] == [task["task_id"]]


def test_model_and_dataset_lists_and_deletes(api, spx):
    ids = [create_model(api, name=f"m{i}")["id"] for i in range(3)]
    create_model(api, name="arima", model_type="arima", parameters={})
    first = api("GET", MODELS, params={"limit": 2, "family": "machine_learning"}).json()
    assert first["total"] == 3 and [m["id"] for m in first["models"]] == ids[::-1][:2]
    params = {"page_token": first["next_page_token"], "limit": 2, "family": "machine_learning"}
    rest = api("GET", MODELS, params=params).json()
    assert [m["id"] for m in rest["models"]] == ids[:1] and rest["next_page_token"] == ""
    assert api("GET", MODELS, params={"family": "quantum"}).status_code == 400
    feature_id = spx["features"]["id"]
    assert api("DELETE", f"{DATASETS}/{feature_id}").status_code == 204
    assert api("GET", f"{DATASETS}/{feature_id}").status_code == 404
    assert api("GET", DATASETS).json()["total"] == 1


def test_a_dataset_stored_before_content_addressing_still_reads(api, tenant, training_process):
    dataset = upload(api, features_csv(40), kind="features", symbol="OLD").json()
    root = training_process.log_path.parent / "artifacts" / tenant / "datasets"
    legacy = root / dataset["id"] / "data.parquet"  # where earlier versions kept its table
    legacy.parent.mkdir(parents=True)
    (root / dataset["version_hash"] / "features.parquet").rename(legacy)
    preview = api("GET", f"{DATASETS}/{dataset['id']}/preview", params={"rows": 2})
    assert preview.status_code == 200, preview.text
    assert len(preview.json()["rows"]) == 2


def test_a_nul_character_in_model_or_dataset_text_is_a_400(api):
    for body in (
        {"name": "m\x00", "model_type": "random_forest"},
        {"name": "m", "model_type": "random_forest", "parameters": {"criterion": "x\x00"}},
    ):
        response = api("POST", MODELS, json=body)
        assert response.status_code == 400 and reason(response) == "INVALID_CHARACTER"
    refused = upload(api, bars_csv(40), kind="bars", symbol="NUL", name="a\x00b")
    assert refused.status_code == 400 and reason(refused) == "INVALID_CHARACTER"
    assert api("GET", MODELS).json()["models"] == []
    assert api("GET", DATASETS).json()["total"] == 0
    # PostgreSQL cannot compare with such text either: the list filters are 400s, not 500s
    for path, name in ((DATASETS, "kind"), (DATASETS, "symbol"), (TASKS, "kind")):
        listed = api("GET", path, params={name: "\U000ffe86\x00x"})
        assert listed.status_code == 400, listed.text
        assert reason(listed) == "INVALID_CHARACTER"
        assert f"filter.{name}" in listed.json()["message"]


def test_a_nul_character_in_a_training_request_is_a_400_that_starts_nothing(api, spx):
    model = create_model(api)
    tasks_before = api("GET", TASKS).json()["total"]
    body = {**train_body(spx), "strategy_id": "s\x00"}
    tune = {**body, "plugin_key": "ml.random_forest", "n_trials": 1}
    automl = {**body, "candidates": {"ml.random_forest": {}}}
    for path, request in (
        (f"{MODELS}/{model['id']}/train", body),
        (f"{MODELS}/{model['id']}/train/async", body),
        (f"{MODELS}/tune", tune),
        (f"{MODELS}/tune/async", tune),
        (f"{MODELS}/automl", automl),
        (f"{MODELS}/automl/async", automl),
    ):
        response = api("POST", path, json=request)
        assert response.status_code == 400, response.text
        assert reason(response) == "INVALID_CHARACTER"
        assert "strategy_id" in response.json()["message"]
    assert api("GET", TASKS).json()["total"] == tasks_before
    assert api("GET", f"{MODELS}/{model['id']}").json()["version"] == model["version"]
