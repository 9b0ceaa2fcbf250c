"""Every experiments endpoint end to end: REST through the real Envoy gateway to the service
process on PostgreSQL, and the same answers over native gRPC."""

from __future__ import annotations

import hashlib
import json
import os
import uuid

import grpc
import pytest
import requests

from mlmesh.experiments.v1 import experiments_service_pb2 as pb
from mlmesh.experiments.v1 import experiments_service_pb2_grpc
from tests.helpers.rest import Client

API = "/api/v1/experiments"


@pytest.fixture
def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def api(registry_gateway, tenant) -> Client:
    return Client(registry_gateway.base_url, tenant)


def reason(response: requests.Response) -> str:
    body = response.json()
    (info,) = [d for d in body["details"] if d["@type"].endswith("ErrorInfo")]
    return info["reason"]


def create_experiment(api, **body) -> dict:
    response = api("POST", API, json=body)
    assert response.status_code == 201, response.text
    return response.json()


def create_run(api, experiment_id=None, **body) -> dict:
    experiment_id = experiment_id or create_experiment(api)["id"]
    response = api("POST", f"{API}/runs", json={"experiment_id": experiment_id, **body})
    assert response.status_code == 201, response.text
    return response.json()


def test_experiment_crud(api):
    created = create_experiment(
        api,
        name="mom-12-1",
        strategy_id="S1",
        parameters={"lookback": 252, "skip": [21]},
        metrics={"sharpe": 1.1},
        tags={"desk": "eq"},
    )
    location = f"{API}/{created['id']}"
    fetched = api("GET", location)
    assert fetched.status_code == 200 and fetched.json() == created
    assert created["lifecycle_stage"] == "active" and created["created_at"].endswith("Z")
    assert created["parameters"] == {"lookback": 252, "skip": [21]}

    patched = api("PATCH", location, json={"metrics": {"sharpe": 1.3}, "git_commit": "abc"})
    assert patched.status_code == 200, patched.text
    assert patched.json()["metrics"] == {"sharpe": 1.3} and patched.json()["strategy_id"] == "S1"
    cleared = api("PATCH", location, params={"update_mask": "gitCommit,tags"}, json={})
    assert cleared.status_code == 200, cleared.text
    assert cleared.json()["git_commit"] == "" and cleared.json()["tags"] == {}

    deleted = api("DELETE", location)
    assert deleted.status_code == 204 and deleted.content == b""
    assert api("GET", location).json()["lifecycle_stage"] == "deleted"
    listed = api("GET", API, params={"lifecycle_stage": "deleted"}).json()
    assert [e["id"] for e in listed["experiments"]] == [created["id"]]
    assert api("DELETE", location).status_code == 400
    restored = api("POST", f"{location}/restore")
    assert restored.status_code == 200 and restored.json()["lifecycle_stage"] == "active"


def test_experiment_errors(api, registry_gateway):
    create_experiment(api, name="taken")
    dup = api("POST", API, json={"name": "taken"})
    assert dup.status_code == 409 and reason(dup) == "EXPERIMENT_NAME_TAKEN"
    missing = api("GET", f"{API}/{uuid.uuid4()}")
    assert missing.status_code == 404 and reason(missing) == "EXPERIMENT_NOT_FOUND"
    theirs = create_experiment(Client(registry_gateway.base_url, "someone-else"))
    for method in ("GET", "PATCH", "DELETE"):
        response = api(method, f"{API}/{theirs['id']}", json={"description": "x"})
        assert response.status_code == 403, (method, response.text)
        assert reason(response) == "TENANT_MISMATCH"
    assert api("POST", API, json={"name": "n" * 300}).status_code == 400
    assert api("POST", API, json={"metrics": {"a": "high"}}).status_code == 400
    assert api("GET", API, params={"limit": "many"}).status_code == 400
    assert api("GET", API, params={"colour": "red"}).status_code == 400
    assert api("GET", API, params={"lifecycle_stage": "gone"}).status_code == 400


def test_experiment_list_paging(api):
    ids = [create_experiment(api, name=f"p{i}", strategy_id="S9")["id"] for i in range(5)]
    first = api("GET", API, params={"limit": 2, "strategy_id": "S9"}).json()
    assert first["total"] == 5 and len(first["experiments"]) == 2
    second = api("GET", API, params={"limit": 2, "page_token": first["next_page_token"]}).json()
    third = api("GET", API, params={"limit": 2, "skip": 4}).json()
    got = [e["id"] for page in (first, second, third) for e in page["experiments"]]
    assert got == list(reversed(ids)) and third["next_page_token"] == ""
    searched = api("GET", API, params={"search": "P3"}).json()
    assert [e["name"] for e in searched["experiments"]] == ["p3"]


def test_compare_experiments_takes_a_bare_array(api, registry_gateway):
    a = create_experiment(api, metrics={"mse": 0.3, "directional_accuracy": 0.55})
    b = create_experiment(api, metrics={"mse": 0.2, "directional_accuracy": 0.51})
    response = api("POST", f"{API}/compare", json=[a["id"], b["id"]])
    assert response.status_code == 200, response.text
    body = response.json()
    assert [e["id"] for e in body["experiments"]] == [a["id"], b["id"]]
    assert set(body["metric_diff"]["mse"]) == {"values", "best_id", "best_value", "direction"}
    assert body["metric_diff"]["mse"]["best_id"] == b["id"]
    assert body["metric_diff"]["mse"]["direction"] == "MINIMIZE"
    assert body["metric_diff"]["directional_accuracy"]["best_id"] == a["id"]
    assert body["metric_diff"]["directional_accuracy"]["direction"] == "MAXIMIZE"
    flipped = api("POST", f"{API}/compare", params={"maximize": "mse"}, json=[a["id"], b["id"]])
    assert flipped.json()["metric_diff"]["mse"]["best_id"] == a["id"]
    gone = [str(uuid.uuid4()), str(uuid.uuid4())]
    missing = api("POST", f"{API}/compare", json=[a["id"], *gone])
    assert missing.status_code == 404
    assert all(i in missing.json()["message"] for i in gone)
    assert api("POST", f"{API}/compare", json=[a["id"]]).status_code == 400
    assert api("POST", f"{API}/compare", json=[a["id"], a["id"]]).status_code == 400
    theirs = create_experiment(Client(registry_gateway.base_url, "someone-else"))
    assert api("POST", f"{API}/compare", json=[a["id"], theirs["id"]]).status_code == 403


def test_an_object_given_to_a_map_value_is_a_400_that_names_the_field(api):
    experiment = create_experiment(api, name=f"maps-{uuid.uuid4().hex[:6]}")
    run = create_run(api, experiment["id"])
    cases = [
        ("POST", API, {"name": "never-stored", "tags": {"k": {}}}, "experiment.tags"),
        ("POST", f"{API}/runs", {"experiment_id": experiment["id"], "tags": {"k": {}}}, "tags"),
        ("POST", f"{API}/runs/{run['id']}/log-params", {"params": {"k": {}}}, "params"),
        ("POST", f"{API}/runs/{run['id']}/log-metrics", {"metrics": {"k": {}}}, "metrics"),
        ("PATCH", f"{API}/{experiment['id']}", {"metrics": {"k": {"x": 1}}}, "experiment.metrics"),
    ]
    for method, path, body, field in cases:
        response = api(method, path, json=body)
        assert response.status_code == 400, (path, response.status_code, response.text)
        assert reason(response) == "UNDECODABLE_REQUEST"
        assert f"field {field!r}" in response.json()["message"]
    # Nothing was written.
    assert api("GET", API, params={"search": "never-stored"}).json()["total"] == 0
    assert (
        api("GET", f"{API}/runs", params={"experiment_id": experiment["id"]}).json()["total"] == 1
    )
    stored = api("GET", f"{API}/runs/{run['id']}").json()
    assert stored["params"] == {} and stored["metrics"] == {}
    assert api("GET", f"{API}/{experiment['id']}").json()["metrics"] == {}


def test_runs_search_without_the_total(api):
    experiment = create_experiment(api)
    for i in range(3):
        create_run(api, experiment["id"], name=f"r{i}")
    params = {"experiment_id": experiment["id"], "limit": 2}
    counted = api("GET", f"{API}/runs", params=params).json()
    uncounted = api("GET", f"{API}/runs", params={**params, "include_total": "false"}).json()
    assert counted["total"] == 3 and uncounted["total"] == -1
    assert [r["id"] for r in uncounted["runs"]] == [r["id"] for r in counted["runs"]]
    assert uncounted["next_page_token"] == counted["next_page_token"] != ""
    asked = api("GET", f"{API}/runs", params={**params, "include_total": "true"}).json()
    assert asked["total"] == 3
    wrong = api("GET", f"{API}/runs", params={**params, "include_total": "maybe"})
    assert wrong.status_code == 400


def test_literal_segments_are_never_ids(api):
    run = create_run(api, name="literal")
    runs = api("GET", f"{API}/runs")
    assert runs.status_code == 200 and "runs" in runs.json()
    assert [r["id"] for r in runs.json()["runs"]] == [run["id"]]
    compared = api("POST", f"{API}/runs/compare", json={"run_ids": [run["id"], run["id"]]})
    assert compared.status_code == 400 and reason(compared) == "DUPLICATE_IDS"
    assert api("GET", f"{API}/compare").status_code == 404


def test_log_batch_series_over_rest(api):
    """The columnar shape through the gateway: NaN and infinities as JSON strings, steps as
    numbers or strings, and the contract's 400s with nothing stored."""
    run = create_run(api, create_experiment(api)["id"])
    run_url = f"{API}/runs/{run['id']}"
    body = {
        "series": [
            {
                "key": "loss",
                "values": [0.5, "NaN", "-Infinity", 0.25],
                "steps": [0, 1, "2", 3],
                "timestamps": [1_000, 1_001, 1_002, 1_003],
            },
            {"key": "sharpe", "values": [1.5]},
        ],
    }
    counts = api("POST", f"{run_url}/log-batch", json=body)
    assert counts.status_code == 200, counts.text
    assert counts.json()["metrics_logged"] == 5
    history = api("GET", f"{run_url}/metrics/loss/history").json()
    assert [(p["step"], p["value"], p["timestamp"]) for p in history["points"]] == [
        ("0", 0.5, "1000"),
        ("1", "NaN", "1001"),
        ("2", "-Infinity", "1002"),
        ("3", 0.25, "1003"),
    ]
    assert api("GET", run_url).json()["metrics"] == {"loss": 0.25, "sharpe": 1.5}

    mismatched = {
        "series": [{"key": "x", "values": [1, 2], "steps": [1]}],
        "tags": [{"key": "t", "value": "v"}],
    }
    refused = api("POST", f"{run_url}/log-batch", json=mismatched)
    assert refused.status_code == 400 and reason(refused) == "SERIES_LENGTH_MISMATCH"
    assert "1 steps for 2 values" in refused.json()["message"]
    too_many = {"series": [{"key": "x", "values": [1.0] * 10_001}]}
    refused = api("POST", f"{run_url}/log-batch", json=too_many)
    assert refused.status_code == 400 and reason(refused) == "BATCH_TOO_LARGE"
    wrong_type = {"series": [{"key": "x", "values": ["high"]}]}
    assert api("POST", f"{run_url}/log-batch", json=wrong_type).status_code == 400
    detail = api("GET", run_url).json()
    assert "x" not in detail["metrics"] and "t" not in detail["tags"]


def test_run_logging_end_to_end(api):
    experiment = create_experiment(api)
    run = create_run(api, experiment["id"], name="r1", tags={"model": "xgb"})
    run_url = f"{API}/runs/{run['id']}"
    assert run["status"] == "RUNNING" and "end_time" not in run

    logged = api("POST", f"{run_url}/log-metrics", json={"metrics": {"loss": 0.5}, "step": 1})
    assert logged.status_code == 200 and logged.json()["metrics_logged"] == 1
    params = api("POST", f"{run_url}/log-params", json={"params": {"lr": "0.01"}})
    assert params.json()["params_logged"] == 1
    conflict = api("POST", f"{run_url}/log-params", json={"params": {"lr": "0.1"}})
    assert conflict.status_code == 400 and reason(conflict) == "PARAM_ALREADY_LOGGED"
    batch = {
        "metrics": [{"key": "loss", "value": 0.5 - s / 100, "step": s} for s in range(2, 50)],
        "params": [{"key": "depth", "value": "3"}],
        "tags": [{"key": "stage", "value": "cv"}],
    }
    counts = api("POST", f"{run_url}/log-batch", json=batch)
    assert counts.json() == {
        "run_id": run["id"],
        "metrics_logged": 48,
        "params_logged": 1,
        "tags_logged": 1,
    }
    bad_batch = {**batch, "params": [{"key": "lr", "value": "9"}]}
    assert api("POST", f"{run_url}/log-batch", json=bad_batch).status_code == 400

    detail = api("GET", run_url).json()
    assert detail["params"] == {"lr": "0.01", "depth": "3"}
    assert detail["tags"] == {"model": "xgb", "stage": "cv"}
    assert detail["metrics"] == {"loss": pytest.approx(0.01)}
    history = api("GET", f"{run_url}/metrics/loss/history").json()
    assert history["total_points"] == 49 and [p["step"] for p in history["points"]][:3] == [
        "1",
        "2",
        "3",
    ]
    sampled = api("GET", f"{run_url}/metrics/loss/history", params={"max_points": 5}).json()
    assert 2 <= len(sampled["points"]) <= 5 and sampled["total_points"] == 49
    zoomed = api(
        "GET", f"{run_url}/metrics/loss/history", params={"start_step": 10, "end_step": 12}
    ).json()
    assert [p["step"] for p in zoomed["points"]] == ["10", "11", "12"]
    assert zoomed["total_points"] == 3

    ended = api("POST", f"{run_url}/end", json={"status": "killed"})
    assert ended.status_code == 200 and ended.json()["status"] == "KILLED"
    again = api("POST", f"{run_url}/end", json={})
    assert again.status_code == 400 and reason(again) == "RUN_ALREADY_ENDED"

    listed = api(
        "GET",
        f"{API}/runs",
        params={"experiment_id": experiment["id"], "filter": "tags.model = 'xgb'"},
    ).json()
    assert listed["total"] == 1 and listed["runs"][0]["id"] == run["id"]
    bad_filter = api("GET", f"{API}/runs", params={"filter": "metrics.loss >> 1"})
    assert bad_filter.status_code == 400 and reason(bad_filter) == "INVALID_FILTER"


def test_run_errors(api, registry_gateway):
    assert api("GET", f"{API}/runs/{uuid.uuid4()}").status_code == 404
    assert api("POST", f"{API}/runs", json={}).status_code == 400
    unknown_exp = api("POST", f"{API}/runs", json={"experiment_id": str(uuid.uuid4())})
    assert unknown_exp.status_code == 404
    theirs = create_run(Client(registry_gateway.base_url, "someone-else"))
    for path in ("", "/log-metrics", "/end"):
        method = "GET" if not path else "POST"
        response = api(method, f"{API}/runs/{theirs['id']}{path}", json={"metrics": {"a": 1}})
        assert response.status_code == 403, (path, response.text)


def test_compare_runs(api):
    experiment = create_experiment(api)
    ids = []
    for lr, sharpe in (("0.1", 1.0), ("0.2", 2.0)):
        run = create_run(api, experiment["id"])
        api(
            "POST",
            f"{API}/runs/{run['id']}/log-batch",
            json={
                "metrics": [{"key": "sharpe", "value": sharpe}],
                "params": [{"key": "lr", "value": lr}],
            },
        )
        ids.append(run["id"])
    body = api("POST", f"{API}/runs/compare", json={"run_ids": ids}).json()
    assert [r["run_id"] for r in body["runs"]] == ids
    # The tracking service's field names: a run comparison names its best run `best_run_id`.
    assert set(body["metric_diff"]["sharpe"]) == {
        "values",
        "best_run_id",
        "best_value",
        "direction",
    }
    assert body["metric_diff"]["sharpe"]["best_run_id"] == ids[1]
    assert body["param_diff"]["lr"]["varies"] is True
    missing = api("POST", f"{API}/runs/compare", json={"run_ids": [ids[0], "nope"]})
    assert missing.status_code == 404


def test_multipart_artifact_round_trip(api):
    run = create_run(api)
    run_url = f"{API}/runs/{run['id']}"
    data = os.urandom(300_000)
    uploaded = api(
        "POST",
        f"{run_url}/log-artifact",
        params={"artifact_path": "models/v1"},
        files={"file": ("model.bin", data, "application/octet-stream")},
    )
    assert uploaded.status_code == 200, uploaded.text
    artifact = uploaded.json()["artifact"]
    assert artifact["path"] == "models/v1/model.bin"
    assert artifact["sha256"] == hashlib.sha256(data).hexdigest()
    assert artifact["size_bytes"] == str(len(data))
    downloaded = api("GET", f"{run_url}/artifacts/models/v1/model.bin")
    assert downloaded.status_code == 200 and downloaded.content == data
    raw = api(
        "POST",
        f"{run_url}/log-artifact",
        params={"artifact_path": "report.json"},
        data=json.dumps({"ok": True}),
        headers={"content-type": "application/json"},
    )
    assert raw.status_code == 200, raw.text
    fetched = api("GET", f"{run_url}/artifacts/report.json")
    assert fetched.json() == {"ok": True} and fetched.headers["content-type"] == "application/json"
    listing = api("GET", f"{run_url}/artifacts").json()
    assert [(a["path"], a["is_dir"]) for a in listing["artifacts"]] == [
        ("models", True),
        ("report.json", False),
    ]
    nested = api("GET", f"{run_url}/artifacts", params={"path": "models/v1"}).json()
    assert nested["artifacts"][0]["sha256"] == artifact["sha256"]
    for evil in ("../other", "/etc", "a/../../b"):
        response = api(
            "POST",
            f"{run_url}/log-artifact",
            params={"artifact_path": evil},
            files={"file": ("x.txt", b"x")},
        )
        assert response.status_code == 400, evil
    assert api("GET", f"{run_url}/artifacts/nope.txt").status_code == 404


def test_grpc_and_rest_agree(api, registry_process, tenant):
    run = create_run(api, name="same")
    with grpc.insecure_channel(registry_process.address) as channel:
        stub = experiments_service_pb2_grpc.ExperimentServiceStub(channel)
        reply = stub.GetRun(pb.GetRunRequest(run_id=run["id"]), metadata=[("x-tenant-id", tenant)])
        assert reply.id == run["id"] and reply.name == "same"
        with pytest.raises(grpc.RpcError) as failure:
            stub.GetRun(pb.GetRunRequest(run_id=run["id"]))
        assert failure.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_a_nul_character_in_any_text_is_a_400_that_writes_nothing(api):
    """PostgreSQL cannot store U+0000: refused before any store sees it, on every backend."""
    experiment = create_experiment(api, name=f"nul-{uuid.uuid4().hex[:6]}")
    run = create_run(api, experiment["id"])
    cases = [
        ("POST", API, {"name": "nul-never", "dataset_version": "v\x00"}),
        ("POST", API, {"name": "nul-never", "artifact_location": "s3://b/\x00"}),
        ("POST", API, {"name": "nul-never", "parameters": {"nested": ["ok", "bad\x00"]}}),
        ("POST", API, {"name": "nul-never", "tags": {"k\x00": "v"}}),
        ("PATCH", f"{API}/{experiment['id']}", {"description": "a\x00b"}),
        ("POST", f"{API}/runs", {"experiment_id": experiment["id"], "name": "r\x00"}),
        ("POST", f"{API}/runs/{run['id']}/log-params", {"params": {"p": "\x00"}}),
        ("POST", f"{API}/runs/{run['id']}/log-batch", {"metrics": [{"key": "m\x00", "value": 1}]}),
        (
            "GET",
            f"{API}/runs?experiment_id={experiment['id']}&filter=tags.a%20%3D%20%27%00%27",
            None,
        ),
        ("GET", f"{API}?strategy_id=s%00", None),
        ("GET", f"{API}?search=s%00", None),
    ]
    for method, path, body in cases:
        response = api(method, path, json=body)
        assert response.status_code == 400, (path, body, response.text)
    assert api("GET", API, params={"search": "nul-never"}).json()["total"] == 0
    stored = api("GET", f"{API}/runs/{run['id']}").json()
    assert stored["params"] == {} and stored["metrics"] == {}
    runs = api("GET", f"{API}/runs", params={"experiment_id": experiment["id"]}).json()
    assert runs["total"] == 1


def test_run_list_of_an_experiment_id_that_is_no_uuid_is_404(api):
    # A NUL byte (found by the fuzzer) must not reach PostgreSQL, which rejects it (500).
    response = api("GET", f"{API}/runs", params={"experiment_id": "\u00ea\x00J"})
    assert response.status_code == 404, response.text
    assert reason(response) == "EXPERIMENT_NOT_FOUND"
