"""The tracking API end to end: real MLflow server (PostgreSQL store), the tracking service as a
process, and the real Envoy gateway, over sockets on 127.0.0.1."""

from __future__ import annotations

import base64

import grpc
import pytest
from google.protobuf.json_format import MessageToDict

from mlmesh.tracking.v1 import tracking_service_pb2 as pb
from tests.tracking.data import BASE_TIME, BULK_RUNS

RUNS = "/api/v1/tracking/runs"


def error_reason(response) -> str:
    body = response.json()
    infos = [d for d in body.get("details", []) if d.get("@type", "").endswith("ErrorInfo")]
    assert infos, body
    return infos[0]["reason"]


def ids(body) -> list[str]:
    return [run["run_id"] for run in body["runs"]]


# --- list / search -------------------------------------------------------------------------


def test_default_tenant_sees_only_untagged_runs_of_visible_experiments(rest, seed):
    body = rest.get(RUNS, params={"strategy_id": "S1"}).json()
    assert set(ids(body)) == {seed.runs["train_a"], seed.runs["train_b"], seed.runs["other_exp"]}
    assert body["count"] == 3 and body["next_page_token"] == ""


def test_runs_are_newest_first(rest, seed):
    body = rest.get(RUNS, params={"strategy_id": "S1"}).json()
    assert ids(body) == [seed.runs["other_exp"], seed.runs["train_b"], seed.runs["train_a"]]
    starts = [int(run["start_time"]) for run in body["runs"]]
    assert starts == sorted(starts, reverse=True)


def test_run_type_and_strategy_filters_combine(rest, seed):
    body = rest.get(RUNS, params={"run_type": "backtest", "strategy_id": "S2"}).json()
    assert ids(body) == [seed.runs["backtest"]]
    summary = body["runs"][0]
    assert summary["status"] == "RUNNING"
    assert summary["params"] == {"lr": "0.1"} and summary["metrics"] == {"sharpe": 0.4}
    assert summary["tags"]["run_type"] == "backtest"
    assert summary["start_time"] == str(BASE_TIME + 3_000)


def test_other_tenant_sees_only_its_runs(rest, seed):
    body = rest.get(RUNS, tenant="acme").json()
    assert ids(body) == [seed.runs["acme"]]
    assert rest.get(RUNS, tenant="nobody").json()["runs"] == []


def test_quote_in_a_filter_value_is_data(rest, seed):
    found = rest.get(RUNS, params={"run_type": "walk'forward"}).json()
    assert ids(found) == [seed.runs["quoted"]]
    injected = rest.get(RUNS, params={"run_type": "x' or tags.run_type != 'x"})
    assert injected.status_code == 200 and injected.json()["runs"] == []
    injected = rest.get(RUNS, params={"strategy_id": "S1' AND tags.`mlmesh.tenant` = 'acme"})
    assert injected.status_code == 200 and injected.json()["runs"] == []


def test_value_mlflow_cannot_express_is_a_400(rest):
    response = rest.get(RUNS, params={"run_type": "a'\"b"})
    assert response.status_code == 400
    assert error_reason(response) == "UNSUPPORTED_FILTER_VALUE"


def test_user_filter_narrows_within_the_tenant(rest, seed):
    body = rest.get(RUNS, params={"filter": "metrics.sharpe > 1.5"}).json()
    assert ids(body) == [seed.runs["train_b"]]
    body = rest.get(RUNS, params={"filter": "tags.`mlmesh.tenant` = 'acme'"}).json()
    assert body["runs"] == []


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"filter": "metrics.sharpe >> 1"}, "INVALID_FILTER"),
        ({"filter": "tags.a = 'x' OR tags.b = 'y'"}, "INVALID_FILTER"),
        ({"order_by": "metrics.sharpe SIDEWAYS"}, "INVALID_ORDER_BY"),
        ({"limit": "-1"}, "INVALID_LIMIT"),
    ],
)
def test_invalid_search_is_a_400(rest, params, reason):
    response = rest.get(RUNS, params=params)
    assert response.status_code == 400, response.text
    assert error_reason(response) == reason


def test_status_and_experiment_filters(rest, seed):
    body = rest.get(RUNS, params={"status": "running"}).json()
    assert ids(body) == [seed.runs["backtest"]]
    body = rest.get(RUNS, params={"experiment_id": seed.experiments["main"], "strategy_id": "S1"})
    assert set(ids(body.json())) == {seed.runs["train_a"], seed.runs["train_b"]}


def test_hidden_or_unknown_experiment_is_a_404(rest, seed):
    for experiment_id in (seed.experiments["hidden"], "987654321"):
        response = rest.get(RUNS, params={"experiment_id": experiment_id})
        assert response.status_code == 404
        assert error_reason(response) == "EXPERIMENT_NOT_FOUND"


def test_order_by_metric(rest, seed):
    body = rest.get(RUNS, params={"order_by": "metrics.sharpe DESC", "run_type": "training"})
    assert ids(body.json())[:2] == [seed.runs["train_b"], seed.runs["train_a"]]


def test_limit_is_clamped_to_100(rest):
    body = rest.get(RUNS, params={"run_type": "cpcv", "limit": 1000}).json()
    assert body["count"] == 100 == len(body["runs"])
    assert body["next_page_token"]


def test_default_limit_is_50(rest):
    body = rest.get(RUNS, params={"run_type": "cpcv"}).json()
    assert body["count"] == 50


def test_page_tokens_walk_every_run_once_in_order(rest, seed):
    seen, token, pages = [], "", 0
    while True:
        params = {"run_type": "cpcv", "limit": 7}
        if token:
            params["page_token"] = token
        body = rest.get(RUNS, params=params).json()
        seen += body["runs"]
        token = body["next_page_token"]
        pages += 1
        if not token:
            break
    assert pages == -(-BULK_RUNS // 7)
    assert [r["run_id"] for r in seen] == list(reversed(seed.bulk))


@pytest.mark.parametrize(
    "token",
    [
        "not-a-token",
        base64.b64encode(b"[1]").decode(),
        base64.b64encode(b"5").decode(),
        base64.b64encode(b'{"offset": -3}').decode(),
        base64.b64encode(b'{"offset": "7"}').decode(),
    ],
)
def test_bad_page_token_is_a_400(rest, token):
    response = rest.get(RUNS, params={"page_token": token})
    assert response.status_code == 400, response.text
    assert error_reason(response) == "INVALID_PAGE_TOKEN"


# --- one run ---------------------------------------------------------------------------------


def test_get_run_detail(rest, seed):
    run_id = seed.runs["train_a"]
    body = rest.get(f"{RUNS}/{run_id}").json()
    assert body["run_id"] == run_id and body["run_name"] == "train-a"
    assert body["status"] == "FINISHED"
    assert body["start_time"] == str(BASE_TIME + 1_000)
    assert body["end_time"] == str(BASE_TIME + 6_000)
    assert body["artifact_uri"]
    assert body["params"] == {"lr": "0.01", "depth": "3"}
    assert body["metrics"] == {"mse": pytest.approx(0.41), "sharpe": 1.2, "val_acc": 0.61}
    for key in ("strategy_id", "git_commit", "dataset_version", "run_type"):
        assert key in body["tags"]


def test_active_run_has_null_end_time(rest, seed):
    body = rest.get(f"{RUNS}/{seed.runs['backtest']}").json()
    assert body["status"] == "RUNNING" and body["end_time"] is None


def test_metrics_and_params_subresources(rest, seed):
    run_id = seed.runs["train_b"]
    assert rest.get(f"{RUNS}/{run_id}/metrics").json() == {
        "run_id": run_id,
        "metrics": {"mse": 0.3, "sharpe": 1.9, "val_acc": 0.55},
    }
    assert rest.get(f"{RUNS}/{run_id}/params").json() == {
        "run_id": run_id,
        "params": {"lr": "0.1", "depth": "3"},
    }


@pytest.mark.parametrize("suffix", ["", "/metrics", "/params", "/metrics/mse/history"])
def test_unknown_run_is_a_404_on_every_run_endpoint(rest, suffix):
    for run_id in ("0" * 32, "no-such-run"):
        response = rest.get(f"{RUNS}/{run_id}{suffix}")
        assert response.status_code == 404, response.text
        assert error_reason(response) == "RUN_NOT_FOUND"
        assert response.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize("suffix", ["", "/metrics", "/params", "/metrics/mse/history"])
def test_another_tenants_run_is_a_403(rest, seed, suffix):
    response = rest.get(f"{RUNS}/{seed.runs['acme']}{suffix}")
    assert response.status_code == 403
    assert error_reason(response) == "TENANT_MISMATCH"
    assert "metrics" not in response.json()
    assert rest.get(f"{RUNS}/{seed.runs['acme']}{suffix}", tenant="acme").status_code == 200


def test_run_of_a_hidden_experiment_is_a_404(rest, seed):
    assert rest.get(f"{RUNS}/{seed.runs['hidden']}").status_code == 404


def test_metric_history_in_step_order(rest, seed):
    body = rest.get(f"{RUNS}/{seed.runs['train_a']}/metrics/mse/history").json()
    assert [int(p["step"]) for p in body["points"]] == list(range(10))
    assert [p["value"] for p in body["points"]] == pytest.approx(
        [0.5 - 0.01 * s for s in range(10)]
    )
    assert body["points"][3]["timestamp"] == str(BASE_TIME + 3)
    assert body["total_points"] == 10


def test_metric_history_downsampled(rest, seed):
    url = f"{RUNS}/{seed.runs['train_a']}/metrics/mse/history"
    body = rest.get(url, params={"max_points": 4}).json()
    # One bucket (4 // 4): mse falls, so its first point is the highest and its last the lowest.
    assert [int(p["step"]) for p in body["points"]] == [0, 9]
    assert body["total_points"] == 10
    zoomed = rest.get(url, params={"start_step": 2, "end_step": 5}).json()
    assert [int(p["step"]) for p in zoomed["points"]] == [2, 3, 4, 5]
    assert zoomed["total_points"] == 4
    backwards = rest.get(url, params={"start_step": 5, "end_step": 2})
    assert backwards.status_code == 400
    assert backwards.json()["details"][0]["reason"] == "INVALID_STEP_RANGE"


def test_metric_history_of_unlogged_key_is_empty(rest, seed):
    body = rest.get(f"{RUNS}/{seed.runs['train_a']}/metrics/never_logged/history").json()
    assert body["points"] == [] and body["total_points"] == 0


# --- compare ---------------------------------------------------------------------------------


def test_compare_keeps_input_order_and_picks_best_by_direction(rest, seed):
    a, b, bt = seed.runs["train_a"], seed.runs["train_b"], seed.runs["backtest"]
    response = rest.post(f"{RUNS}/compare", json={"run_ids": [bt, a, b]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert [r["run_id"] for r in body["runs"]] == [bt, a, b]
    assert body["runs"][1]["run_type"] == "training" and body["runs"][0]["run_type"] == "backtest"
    mse = body["metric_diff"]["mse"]
    assert set(mse) == {"values", "best_run_id", "best_value", "direction"}
    assert mse["direction"] == "MINIMIZE" and mse["best_run_id"] == b and mse["best_value"] == 0.3
    assert mse["values"] == {bt: None, a: pytest.approx(0.41), b: 0.3}
    sharpe = body["metric_diff"]["sharpe"]
    assert sharpe["direction"] == "MAXIMIZE" and sharpe["best_run_id"] == b
    acc = body["metric_diff"]["val_acc"]
    assert acc["direction"] == "MAXIMIZE" and acc["best_run_id"] == a
    assert body["param_diff"]["lr"] == {"values": {bt: "0.1", a: "0.01", b: "0.1"}, "varies": True}
    assert body["param_diff"]["depth"]["varies"] is True
    assert body["param_diff"]["depth"]["values"][bt] is None


def test_compare_param_constant_across_runs_does_not_vary(rest, seed):
    body = rest.post(
        f"{RUNS}/compare", json={"run_ids": [seed.runs["train_a"], seed.runs["train_b"]]}
    ).json()
    assert body["param_diff"]["depth"]["varies"] is False


def test_compare_maximize_overrides_the_name_rule(rest, seed):
    a, b = seed.runs["train_a"], seed.runs["train_b"]
    body = rest.post(f"{RUNS}/compare", json={"run_ids": [a, b], "maximize": ["mse"]}).json()
    assert body["metric_diff"]["mse"]["direction"] == "MAXIMIZE"
    assert body["metric_diff"]["mse"]["best_run_id"] == a


@pytest.mark.parametrize("count", [0, 1, 11])
def test_compare_needs_2_to_10_runs(rest, seed, count):
    run_ids = (list(seed.runs.values()) + seed.bulk)[:count]
    response = rest.post(f"{RUNS}/compare", json={"run_ids": run_ids})
    assert response.status_code == 400
    assert error_reason(response) == "INVALID_ID_COUNT"


def test_compare_duplicates_are_a_400(rest, seed):
    a = seed.runs["train_a"]
    response = rest.post(f"{RUNS}/compare", json={"run_ids": [a, a]})
    assert response.status_code == 400 and error_reason(response) == "DUPLICATE_IDS"


def test_compare_lists_every_missing_run(rest, seed):
    missing = ["f" * 32, "e" * 32]
    response = rest.post(f"{RUNS}/compare", json={"run_ids": [seed.runs["train_a"], *missing]})
    assert response.status_code == 404
    body = response.json()
    assert all(run_id in body["message"] for run_id in missing)
    info = next(d for d in body["details"] if d["@type"].endswith("ErrorInfo"))
    assert info["metadata"]["run_ids"] == ",".join(missing)


def test_compare_with_another_tenants_run_is_a_403(rest, seed):
    response = rest.post(
        f"{RUNS}/compare", json={"run_ids": [seed.runs["train_a"], seed.runs["acme"]]}
    )
    assert response.status_code == 403


def test_compare_wrong_type_is_a_400(rest):
    response = rest.post(
        f"{RUNS}/compare", json={"run_ids": "not-a-list-of-strings", "maximize": 3}
    )
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/json")


# --- experiments -----------------------------------------------------------------------------


def test_experiments_lists_only_configured_ones(rest, seed):
    body = rest.get("/api/v1/tracking/experiments").json()
    names = {e["name"] for e in body["experiments"]}
    assert names == {f"{seed.prefix}-main", f"{seed.prefix}-other"}
    experiment = next(e for e in body["experiments"] if e["name"].endswith("-main"))
    assert experiment["experiment_id"] == seed.experiments["main"]
    assert experiment["lifecycle_stage"] == "active"
    assert int(experiment["creation_time"]) > 0 and experiment["artifact_location"]


# --- gateway behaviour -----------------------------------------------------------------------


def test_unknown_query_parameter_is_a_json_400(rest):
    response = rest.get(RUNS, params={"colour": "blue"})
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["code"] == 3


def test_unknown_path_is_a_json_404(rest):
    response = rest.get("/api/v1/tracking/nothing-here")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/json")


def test_wrong_type_in_query_is_a_json_400(rest):
    response = rest.get(RUNS, params={"limit": "many"})
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"run_type": "train\x00ing"}, "run_type"),
        ({"strategy_id": "S\x001"}, "strategy_id"),
        ({"experiment_id": "1\x00"}, "experiment_id"),
        ({"filter": "tags.a = 'x\x00'"}, "filter"),
        ({"filter": "params.`a\x00` = 'x'"}, "filter"),
        ({"order_by": ["metrics.sharpe", "metrics.`a\x00` DESC"]}, "order_by[1]"),
        ({"page_token": "\x00"}, "page_token"),
    ],
)
def test_a_nul_character_in_search_text_is_a_400_before_mlflow(rest, params, field):
    # MLflow's server answers 500 for a NUL (its PostgreSQL store cannot hold one).
    response = rest.get(RUNS, params=params)
    assert response.status_code == 400, response.text
    assert error_reason(response) == "INVALID_CHARACTER"
    assert response.json()["details"][0]["metadata"] == {"field": field}


def test_a_nul_character_in_compare_is_a_400(rest, seed):
    runs = [seed.runs["train_a"], seed.runs["train_b"]]
    for body in ({"run_ids": [runs[0], "x\x00"]}, {"run_ids": runs, "maximize": ["a\x00"]}):
        response = rest.post(f"{RUNS}/compare", json=body)
        assert response.status_code == 400, response.text
        assert error_reason(response) == "INVALID_CHARACTER"


def test_a_nul_character_in_a_path_is_a_400_over_rest_and_grpc(rest, gateway_stub, seed):
    # Over REST the gateway itself refuses an encoded NUL in a path; over gRPC the service does.
    run_id = seed.runs["train_a"]
    for path in (f"{RUNS}/a%00b", f"{RUNS}/{run_id}/metrics/a%00b/history"):
        assert rest.get(path).status_code == 400
    for call, request in (
        (gateway_stub.GetRun, pb.GetRunRequest(run_id="a\x00b")),
        (gateway_stub.GetRunMetrics, pb.GetRunMetricsRequest(run_id="a\x00b")),
        (gateway_stub.GetMetricHistory, pb.GetMetricHistoryRequest(run_id=run_id, key="m\x00")),
    ):
        with pytest.raises(grpc.RpcError) as refused:
            call(request)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "NUL" in refused.value.details()


# --- gRPC and REST agree ---------------------------------------------------------------------


def _as_json(message) -> dict:
    return MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def test_grpc_direct_through_gateway_and_rest_agree(rest, stub, gateway_stub, seed):
    request = pb.GetRunRequest(run_id=seed.runs["train_a"])
    direct, via_gateway = stub.GetRun(request), gateway_stub.GetRun(request)
    assert direct == via_gateway
    assert _as_json(direct) == rest.get(f"{RUNS}/{seed.runs['train_a']}").json()
    listing = pb.ListRunsRequest(strategy_id="S1")
    assert _as_json(stub.ListRuns(listing)) == rest.get(RUNS, params={"strategy_id": "S1"}).json()
    compare = pb.CompareRunsRequest(run_ids=[seed.runs["train_a"], seed.runs["backtest"]])
    assert (
        _as_json(stub.CompareRuns(compare))
        == rest.post(f"{RUNS}/compare", json={"run_ids": list(compare.run_ids)}).json()
    )


def test_grpc_errors_carry_the_same_codes(stub, gateway_stub, seed):
    for client in (stub, gateway_stub):
        with pytest.raises(grpc.RpcError) as missing:
            client.GetRun(pb.GetRunRequest(run_id="0" * 32))
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as foreign:
            client.GetRun(pb.GetRunRequest(run_id=seed.runs["acme"]))
        assert foreign.value.code() == grpc.StatusCode.PERMISSION_DENIED
    reply = stub.GetRun(
        pb.GetRunRequest(run_id=seed.runs["acme"]), metadata=[("x-tenant-id", "acme")]
    )
    assert reply.run_id == seed.runs["acme"]
