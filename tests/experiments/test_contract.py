"""The registry's rules, run against every store backend (in-memory, SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import math
import time
import uuid

import pytest

from mlmesh_common.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from mlmesh_experiments.entities import MetricPoint, MetricSeries
from mlmesh_experiments.storage.base import HistoryQuery, StoredArtifactRecord


def reason(excinfo) -> str:
    return excinfo.value.reason


async def make_experiment(service, tenant, **fields):
    return await service.create_experiment(tenant, fields)


async def make_run(service, tenant, experiment_id=None, **kwargs):
    if experiment_id is None:
        experiment_id = (await make_experiment(service, tenant)).id
    return await service.create_run(tenant, experiment_id, **kwargs)


# --- experiments -----------------------------------------------------------------------------


async def test_create_and_get_round_trip(service, tenant):
    fields = {
        "name": "momentum",
        "description": "12-1 momentum",
        "strategy_id": "S1",
        "git_commit": "abc123",
        "tags": {"team": "quant"},
        "parameters": {"lr": 0.01, "layers": [64, 32], "nested": {"a": True}},
        "metrics": {"sharpe": 1.4},
        "artifacts": {"model": "s3://b/m.pkl"},
    }
    created = await make_experiment(service, tenant, **fields)
    fetched = await service.get_experiment(tenant, created.id)
    assert uuid.UUID(fetched.id)
    for name, value in fields.items():
        assert getattr(fetched, name) == value
    assert fetched.lifecycle_stage == "active"
    assert fetched.created_at == fetched.updated_at > 0


async def test_missing_name_is_generated_and_unique(service, tenant):
    first = await make_experiment(service, tenant)
    second = await make_experiment(service, tenant, name="  ")
    assert first.name and second.name and first.name != second.name


async def test_duplicate_active_name_is_409_but_archived_names_are_free(service, tenant):
    old = await make_experiment(service, tenant, name="dup")
    with pytest.raises(AlreadyExists) as excinfo:
        await make_experiment(service, tenant, name="dup")
    assert reason(excinfo) == "EXPERIMENT_NAME_TAKEN"
    await service.delete_experiment(tenant, old.id)
    await make_experiment(service, tenant, name="dup")
    with pytest.raises(AlreadyExists):
        await service.restore_experiment(tenant, old.id)
    # Another tenant may use the same name.
    await make_experiment(service, f"{tenant}-other", name="dup")


@pytest.mark.parametrize("bad_id", ["nope", str(uuid.uuid4()), "../etc", ""])
async def test_unknown_experiment_is_404(service, tenant, bad_id):
    with pytest.raises(NotFound) as excinfo:
        await service.get_experiment(tenant, bad_id)
    assert reason(excinfo) == "EXPERIMENT_NOT_FOUND"


async def test_another_tenants_experiment_is_403_everywhere(service, tenant):
    theirs = await make_experiment(service, f"{tenant}-x", name="secret")
    await make_run(service, f"{tenant}-x", theirs.id)  # runs there: still none of the caller's
    calls = [
        service.get_experiment(tenant, theirs.id),
        service.update_experiment(tenant, theirs.id, {"description": "mine"}, []),
        service.delete_experiment(tenant, theirs.id),
        service.restore_experiment(tenant, theirs.id),
        service.create_run(tenant, theirs.id, tags={"mine": "yes"}),
        service.list_runs(tenant, experiment_id=theirs.id),
    ]
    for call in calls:
        with pytest.raises(PermissionDenied):
            await call
    unchanged = await service.get_experiment(f"{tenant}-x", theirs.id)
    assert unchanged.description == "" and unchanged.lifecycle_stage == "active"
    # The refused create stored nothing: their experiment still holds their one run.
    assert (await service.list_runs(f"{tenant}-x", experiment_id=theirs.id)).total == 1


async def test_limits_are_400_with_the_limit(service, tenant):
    with pytest.raises(InvalidArgument) as excinfo:
        await make_experiment(service, tenant, name="n" * 256)
    assert "255" in str(excinfo.value)
    with pytest.raises(InvalidArgument):
        await make_experiment(service, tenant, description="d" * 1001)
    with pytest.raises(InvalidArgument):
        await make_experiment(service, tenant, tags={"k" * 251: "v"})
    with pytest.raises(InvalidArgument):
        await make_experiment(service, tenant, tags={"": "v"})
    page = await service.list_experiments(tenant)
    assert page.total == 0


async def test_list_is_newest_first_with_exact_total_and_tokens(service, tenant):
    created = [await make_experiment(service, tenant, name=f"e{i}") for i in range(7)]
    # Newest first; experiments created in the same millisecond by id, descending.
    ids = [e.id for e in sorted(created, key=lambda e: (e.created_at, e.id))]
    seen, token = [], ""
    while True:
        page = await service.list_experiments(tenant, limit=3, page_token=token)
        assert page.total == 7
        seen += [e.id for e in page.items]
        token = page.next_page_token
        if not token:
            break
    assert seen == list(reversed(ids))
    offset_page = await service.list_experiments(tenant, limit=2, offset=5)
    assert [e.id for e in offset_page.items] == seen[5:7] and offset_page.next_page_token == ""


async def test_list_filters(service, tenant):
    await make_experiment(service, tenant, name="Alpha_Momentum", strategy_id="S1")
    await make_experiment(service, tenant, name="beta%", strategy_id="S2")
    gone = await make_experiment(service, tenant, name="gamma", strategy_id="S1")
    await service.delete_experiment(tenant, gone.id)

    async def names(**kwargs):
        return sorted(e.name for e in (await service.list_experiments(tenant, **kwargs)).items)

    assert await names(search="MOMENT") == ["Alpha_Momentum"]
    # LIKE wildcards in the search text are literal characters.
    assert await names(search="%") == ["beta%"]
    assert await names(search="a_m") == ["Alpha_Momentum"]
    assert await names(strategy_id="S1") == ["Alpha_Momentum"]
    assert await names(lifecycle_stage="deleted") == ["gamma"]
    assert await names(lifecycle_stage="ALL") == ["Alpha_Momentum", "beta%", "gamma"]
    with pytest.raises(InvalidArgument):
        await service.list_experiments(tenant, lifecycle_stage="archived")
    with pytest.raises(InvalidArgument) as excinfo:
        await service.list_experiments(tenant, page_token="garbage!")
    assert reason(excinfo) == "INVALID_PAGE_TOKEN"
    clamped = await service.list_experiments(tenant, limit=5000)
    assert clamped.total == 2


async def test_update_replaces_present_fields_and_mask_clears(service, tenant):
    experiment = await make_experiment(
        service, tenant, name="u", metrics={"mse": 1.0, "mae": 2.0}, git_commit="abc"
    )
    updated = await service.update_experiment(
        tenant, experiment.id, {"metrics": {"sharpe": 2.0}, "mlflow_run_id": "r1"}, []
    )
    assert updated.metrics == {"sharpe": 2.0} and updated.git_commit == "abc"
    cleared = await service.update_experiment(
        tenant, experiment.id, {"git_commit": ""}, ["git_commit"]
    )
    assert cleared.git_commit == ""
    fetched = await service.get_experiment(tenant, experiment.id)
    assert fetched.metrics == {"sharpe": 2.0} and fetched.mlflow_run_id == "r1"
    assert fetched.git_commit == "" and fetched.updated_at >= fetched.created_at
    with pytest.raises(InvalidArgument):
        await service.update_experiment(tenant, experiment.id, {}, ["id"])
    with pytest.raises(InvalidArgument):
        await service.update_experiment(tenant, experiment.id, {"name": ""}, ["name"])
    await make_experiment(service, tenant, name="taken")
    with pytest.raises(AlreadyExists):
        await service.update_experiment(tenant, experiment.id, {"name": "taken"}, [])


async def test_delete_and_restore(service, tenant):
    experiment = await make_experiment(service, tenant, name="d")
    run = await make_run(service, tenant, experiment.id)
    await service.delete_experiment(tenant, experiment.id)
    with pytest.raises(FailedPrecondition):
        await service.delete_experiment(tenant, experiment.id)
    assert (await service.get_experiment(tenant, experiment.id)).lifecycle_stage == "deleted"
    assert (await service.get_run(tenant, run.id)).lifecycle_stage == "deleted"
    with pytest.raises(FailedPrecondition) as excinfo:
        await service.log_batch(tenant, run.id, metrics=[MetricPoint("m", 1.0, 0, 1)])
    assert reason(excinfo) == "RUN_DELETED"
    with pytest.raises(FailedPrecondition) as excinfo:
        await service.create_run(tenant, experiment.id, tags={"late": "yes"})
    assert reason(excinfo) == "EXPERIMENT_DELETED"
    restored = await service.restore_experiment(tenant, experiment.id)
    assert restored.lifecycle_stage == "active"
    # The refused create stored nothing.
    assert [r.id for r in (await service.list_runs(tenant, experiment_id=experiment.id)).items] == [
        run.id
    ]
    with pytest.raises(FailedPrecondition):
        await service.restore_experiment(tenant, experiment.id)


async def test_compare_experiments(service, tenant):
    a = await make_experiment(service, tenant, metrics={"mse": 0.5, "sharpe": 1.0})
    b = await make_experiment(service, tenant, metrics={"mse": 0.2, "sharpe": 2.0, "val_acc": 0.6})
    result = await service.compare_experiments(tenant, [b.id, a.id])
    assert [e.id for e in result.experiments] == [b.id, a.id]
    assert result.metric_diff["mse"].best_id == b.id
    assert result.metric_diff["sharpe"].best_id == b.id
    assert result.metric_diff["sharpe"].direction == "maximize"
    assert result.metric_diff["val_acc"].values == {b.id: 0.6, a.id: None}
    flipped = await service.compare_experiments(tenant, [a.id, b.id], maximize=["mse"])
    assert flipped.metric_diff["mse"].best_id == a.id
    missing = [str(uuid.uuid4()), "not-a-uuid"]
    with pytest.raises(NotFound) as excinfo:
        await service.compare_experiments(tenant, [a.id, *missing])
    assert excinfo.value.metadata["experiment_ids"] == ",".join(missing)
    for ids in ([a.id], [a.id, a.id], [str(uuid.uuid4()) for _ in range(11)]):
        with pytest.raises(InvalidArgument):
            await service.compare_experiments(tenant, ids)
    theirs = await make_experiment(service, f"{tenant}-x")
    with pytest.raises(PermissionDenied):
        await service.compare_experiments(tenant, [a.id, theirs.id])


# --- runs ------------------------------------------------------------------------------------


async def test_run_lifecycle(service, tenant):
    experiment = await make_experiment(service, tenant)
    run = await service.create_run(tenant, experiment.id, "r", "desc", {"stage": "dev"})
    fetched = await service.get_run(tenant, run.id)
    assert fetched.status == "RUNNING" and fetched.tags == {"stage": "dev"}
    assert fetched.end_time is None and fetched.artifact_uri.endswith(run.id)
    ended = await service.end_run(tenant, run.id, "FAILED")
    assert ended.status == "FAILED" and ended.end_time >= ended.start_time
    with pytest.raises(FailedPrecondition) as excinfo:
        await service.end_run(tenant, run.id)
    assert reason(excinfo) == "RUN_ALREADY_ENDED"
    with pytest.raises(InvalidArgument):
        await service.end_run(tenant, (await make_run(service, tenant)).id, "RUNNING")
    with pytest.raises(NotFound):
        await service.create_run(tenant, str(uuid.uuid4()))
    with pytest.raises(InvalidArgument):
        await service.create_run(tenant, "")


async def test_run_details_are_stored_and_read_in_the_runs_tenant(service, store, tenant):
    run = await make_run(service, tenant, tags={"team": "q"})
    await service.log_batch(
        tenant, run.id, metrics=[MetricPoint("loss", 0.5, 1, 10)], params=[("lr", "0.1")]
    )
    record = StoredArtifactRecord("a.txt", 3, "0" * 64, "file:///a.txt")
    await store.record_artifact(tenant, run.id, record, 1)
    other = f"{tenant}-x"
    assert await store.metric_history(other, run.id, "loss", HistoryQuery()) == ([], 0)
    assert await store.artifact_records(other, run.id) == {}
    points, _ = await store.metric_history(tenant, run.id, "loss", HistoryQuery())
    assert [p.value for p in points] == [0.5]
    assert await store.artifact_records(tenant, run.id) == {"a.txt": record}
    # Details written under another tenant (a caller that skipped the ownership check) never
    # show on the run.
    await store.log_batch(
        other, run.id, [MetricPoint("loss", 9.0, 99, 99)], {"lr": "9"}, {"team": "z"}
    )
    await store.record_artifact(other, run.id, StoredArtifactRecord("a.txt", 9, "f" * 64, "x"), 2)
    assert await store.artifact_records(tenant, run.id) == {"a.txt": record}
    fetched = await service.get_run(tenant, run.id)
    assert (fetched.tags, fetched.params, fetched.metrics) == (
        {"team": "q"},
        {"lr": "0.1"},
        {"loss": 0.5},
    )
    matches = await service.list_runs(tenant, filter_text="metrics.loss > 1")
    assert run.id not in [found.id for found in matches.items]


async def test_latest_metric_is_highest_step_then_latest_timestamp(service, tenant):
    run = await make_run(service, tenant)
    log = service.log_batch
    await log(tenant, run.id, metrics=[MetricPoint("loss", 0.5, 10, 1000)])
    await log(tenant, run.id, metrics=[MetricPoint("loss", 0.9, 3, 5000)])  # older step
    assert (await service.get_run(tenant, run.id)).metrics["loss"] == 0.5
    await log(tenant, run.id, metrics=[MetricPoint("loss", 0.4, 10, 2000)])  # same step, later
    assert (await service.get_run(tenant, run.id)).metrics["loss"] == 0.4
    batch = [MetricPoint("acc", v, s, 100 + s) for s, v in [(2, 0.6), (7, 0.7), (5, 0.65)]]
    await log(tenant, run.id, metrics=batch)
    assert (await service.get_run(tenant, run.id)).metrics["acc"] == 0.7
    # In one batch, over interleaved keys: highest step, then timestamp, then the later point.
    batch = [
        MetricPoint("tie", 0.1, 4, 50),
        MetricPoint("mix", 0.2, 9, 10),
        MetricPoint("tie", 0.3, 4, 50),
        MetricPoint("mix", 0.4, 9, 20),
        MetricPoint("mix", 0.5, 8, 99),
        MetricPoint("tie", 0.6, 4, 49),
    ]
    await log(tenant, run.id, metrics=batch)
    metrics = (await service.get_run(tenant, run.id)).metrics
    assert (metrics["tie"], metrics["mix"]) == (0.3, 0.4)
    await log(tenant, run.id, metrics=[MetricPoint("nan_metric", math.nan, 0, 1)])
    assert math.isnan((await service.get_run(tenant, run.id)).metrics["nan_metric"])
    points, total = await service.metric_history(tenant, run.id, "loss")
    assert total == 3
    assert [(p.step, p.value) for p in points] == [(3, 0.9), (10, 0.5), (10, 0.4)]


async def test_metric_history_downsamples_and_404s(service, tenant):
    run = await make_run(service, tenant)
    await service.log_batch(
        tenant, run.id, metrics=[MetricPoint("eq", float(s), s, 1) for s in range(100)]
    )
    points, total = await service.metric_history(tenant, run.id, "eq", max_points=10)
    # Two buckets (10 // 4) of 50 steps: each one's first, lowest, highest and last point.
    assert total == 100 and [p.step for p in points] == [0, 49, 50, 99]
    points, total = await service.metric_history(
        tenant, run.id, "eq", max_points=8, start_step=10, end_step=29
    )
    assert total == 20 and [p.step for p in points] == [10, 19, 20, 29]
    points, total = await service.metric_history(tenant, run.id, "eq", start_step=97)
    assert total == 3 and [p.value for p in points] == [97.0, 98.0, 99.0]
    # A range with no point of a logged metric is empty, not a 404.
    assert await service.metric_history(tenant, run.id, "eq", start_step=500) == ([], 0)
    with pytest.raises(InvalidArgument):
        await service.metric_history(tenant, run.id, "eq", start_step=5, end_step=4)
    with pytest.raises(NotFound):
        await service.metric_history(tenant, run.id, "nope")
    with pytest.raises(InvalidArgument):
        await service.metric_history(tenant, run.id, "eq", max_points=-1)


async def test_params_are_immutable(service, tenant):
    run = await make_run(service, tenant)
    await service.log_batch(tenant, run.id, params=[("lr", "0.01")])
    await service.log_batch(tenant, run.id, params=[("lr", "0.01"), ("depth", "3")])
    with pytest.raises(InvalidArgument) as excinfo:
        await service.log_batch(tenant, run.id, params=[("lr", "0.1")])
    assert reason(excinfo) == "PARAM_ALREADY_LOGGED"
    with pytest.raises(InvalidArgument):
        await service.log_batch(tenant, run.id, params=[("x", "1"), ("x", "2")])
    assert (await service.get_run(tenant, run.id)).params == {"lr": "0.01", "depth": "3"}


async def test_log_batch_is_atomic(service, tenant):
    run = await make_run(service, tenant)
    await service.log_batch(tenant, run.id, params=[("lr", "0.01")])
    metrics = [MetricPoint("loss", 1.0 / (s + 1), s, 1) for s in range(500)]
    # Fails inside the store transaction, after its metrics, tags and new param were written.
    with pytest.raises(InvalidArgument):
        await service.log_batch(
            tenant,
            run.id,
            metrics=metrics,
            params=[("depth", "3"), ("lr", "0.5")],
            tags=[("t", "x")],
        )
    # Fails validation before any write.
    with pytest.raises(InvalidArgument):
        await service.log_batch(
            tenant, run.id, metrics=[*metrics, MetricPoint("", 1.0, 0, 1)], tags=[("t", "x")]
        )
    with pytest.raises(InvalidArgument):
        await service.log_batch(tenant, run.id, params=[("big", "v" * 6001)])
    with pytest.raises(InvalidArgument) as excinfo:
        await service.log_batch(
            tenant, run.id, metrics=[MetricPoint("m", 1.0, s, 1) for s in range(10_001)]
        )
    assert reason(excinfo) == "BATCH_TOO_LARGE"
    fetched = await service.get_run(tenant, run.id)
    assert fetched.metrics == {} and fetched.tags == {} and fetched.params == {"lr": "0.01"}
    with pytest.raises(NotFound):
        await service.metric_history(tenant, run.id, "loss")


async def test_series_log_the_same_points_as_one_input_each(service, tenant):
    by_point, by_series = await make_run(service, tenant), await make_run(service, tenant)
    values = [0.5, math.nan, -math.inf, 2.0]
    await service.log_batch(
        tenant, by_point.id, metrics=[MetricPoint("loss", v, s, 7) for s, v in enumerate(values)]
    )
    before = time.time_ns() // 1_000_000
    counts = await service.log_batch(
        tenant,
        by_series.id,
        series=[
            MetricSeries("loss", values, range(4), [7] * 4),
            MetricSeries("acc", [0.9]),  # no steps: step 0; no timestamps: now
        ],
    )
    assert counts.metrics == 5
    expected, _ = await service.metric_history(tenant, by_point.id, "loss")
    found, _ = await service.metric_history(tenant, by_series.id, "loss")
    assert [(p.step, p.timestamp, repr(p.value)) for p in found] == [
        (p.step, p.timestamp, repr(p.value)) for p in expected
    ]
    [acc], _ = await service.metric_history(tenant, by_series.id, "acc")
    assert acc.step == 0 and acc.value == 0.9 and acc.timestamp >= before
    latest = (await service.get_run(tenant, by_series.id)).metrics
    assert latest == {"acc": 0.9, "loss": 2.0}


async def test_series_come_after_metrics_and_share_their_limit(service, tenant):
    run = await make_run(service, tenant)
    # Same step and timestamp: the later point in the batch is the latest, the series' here.
    await service.log_batch(
        tenant,
        run.id,
        metrics=[MetricPoint("m", 1.0, 3, 5)],
        series=[MetricSeries("m", [2.0], [3], [5])],
    )
    assert (await service.get_run(tenant, run.id)).metrics["m"] == 2.0
    with pytest.raises(InvalidArgument) as excinfo:
        await service.log_batch(
            tenant,
            run.id,
            metrics=[MetricPoint("m", 1.0, s, 1) for s in range(6_000)],
            series=[MetricSeries("n", [1.0] * 4_001)],
        )
    assert reason(excinfo) == "BATCH_TOO_LARGE"
    assert excinfo.value.metadata == {"field": "metrics", "limit": "10000"}
    with pytest.raises(NotFound):
        await service.metric_history(tenant, run.id, "n")


@pytest.mark.parametrize(
    ("series", "wanted"),
    [
        (MetricSeries("m", [1.0, 2.0], [1]), "SERIES_LENGTH_MISMATCH"),
        (MetricSeries("m", [1.0], [], [1, 2]), "SERIES_LENGTH_MISMATCH"),
        (MetricSeries("", [1.0]), "INVALID_KEY"),
        (MetricSeries("m", [1.0], [0], [-1]), "INVALID_TIMESTAMP"),
    ],
)
async def test_a_bad_series_rejects_the_whole_batch(service, tenant, series, wanted):
    run = await make_run(service, tenant)
    with pytest.raises(InvalidArgument) as excinfo:
        await service.log_batch(
            tenant,
            run.id,
            metrics=[MetricPoint("ok", 1.0, 0, 1)],
            tags=[("t", "x")],
            series=[MetricSeries("fine", [1.0]), series],
        )
    assert reason(excinfo) == wanted
    fetched = await service.get_run(tenant, run.id)
    assert fetched.metrics == {} and fetched.tags == {}


async def test_concurrent_log_batches_lose_nothing(service, tenant):
    run = await make_run(service, tenant)

    async def client(worker: int) -> None:
        # Every client also writes two shared keys, in an order that differs between clients.
        shared = ["shared_a", "shared_b"] if worker % 2 else ["shared_b", "shared_a"]
        for chunk in range(5):
            points = [
                MetricPoint(f"w{worker}", float(i), chunk * 100 + i, 1 + i) for i in range(100)
            ]
            points += [MetricPoint(key, float(worker), chunk, 1 + worker) for key in shared]
            tags = [(key, "x") for key in shared] + [(f"w{worker}", "x")]
            await service.log_batch(tenant, run.id, metrics=points, tags=tags)

    await asyncio.gather(*(client(w) for w in range(6)))
    fetched = await service.get_run(tenant, run.id)
    assert {k: v for k, v in fetched.metrics.items() if k.startswith("w")} == {
        f"w{w}": 99.0 for w in range(6)
    }
    # Latest = highest step (4), then latest timestamp (the worker number): worker 5.
    assert fetched.metrics["shared_a"] == fetched.metrics["shared_b"] == 5.0
    for worker in range(6):
        points, total = await service.metric_history(tenant, run.id, f"w{worker}")
        assert total == 500 and [p.step for p in points] == list(range(500))
    _, shared_total = await service.metric_history(tenant, run.id, "shared_a")
    assert shared_total == 30


async def test_list_runs_with_filters(service, tenant):
    experiment = await make_experiment(service, tenant)
    specs = [
        ("a", {"model": "xgb"}, {"sharpe": 1.5}, {"lr": "0.1"}),
        ("b", {"model": "lgbm"}, {"sharpe": 0.5}, {"lr": "0.01"}),
        ("c", {"model": "xgb", "quote": "it's"}, {"sharpe": 2.5}, {}),
    ]
    runs = {}
    for name, tags, metrics, params in specs:
        run = await service.create_run(tenant, experiment.id, name, tags=tags)
        await service.log_batch(
            tenant,
            run.id,
            metrics=[MetricPoint(k, v, 0, 1) for k, v in metrics.items()],
            params=list(params.items()),
        )
        runs[name] = run.id
    await service.end_run(tenant, runs["b"])

    async def names(filter_text="", **kwargs):
        page = await service.list_runs(tenant, filter_text=filter_text, **kwargs)
        assert page.total == len(page.items)
        return sorted(r.name for r in page.items)

    assert await names() == ["a", "b", "c"]
    assert await names("tags.model = 'xgb' and metrics.sharpe > 2") == ["c"]
    assert await names("metrics.sharpe >= 0.5 AND params.lr = '0.01'") == ["b"]
    assert await names("params.lr IS NULL") == ["c"]
    assert await names("tags.model LIKE 'l%'") == ["b"]
    assert await names("attributes.status = 'FINISHED'") == ["b"]
    assert await names('tags.quote = "it\'s"') == ["c"]
    assert await names(status="RUNNING") == ["a", "c"]
    assert await names(experiment_id=experiment.id) == ["a", "b", "c"]
    # An injection attempt is a literal value that matches nothing, or a 400.
    assert await names("tags.model = 'xgb'' OR ''1''=''1'") == []
    for bad in [
        "metrics.sharpe >> 1",
        "tags.a = 'x' OR tags.b = 'y'",
        "metrics.sharpe > 'abc'",
        "attributes.nope = 'x'",
        "datasets.name = 'd'",
        "attributes.status = 'DONE'",
    ]:
        with pytest.raises(InvalidArgument) as excinfo:
            await service.list_runs(tenant, filter_text=bad)
        assert reason(excinfo) == "INVALID_FILTER", bad
    other = await service.list_runs(f"{tenant}-x")
    assert other.total == 0


async def test_list_runs_ordered_by_metrics_params_tags_and_attributes(service, tenant):
    experiment = await make_experiment(service, tenant)
    specs = [
        ("a", {"sharpe": 1.5, "loss": math.nan}, {"lr": "0.1"}, {"team": "q"}),
        ("b", {"sharpe": 0.5}, {"lr": "0.01"}, {}),
        ("c", {"sharpe": 2.5, "loss": 0.2}, {}, {"team": "a"}),
        ("d", {}, {"lr": "0.5"}, {"team": "q"}),
    ]
    for name, metrics, params, tags in specs:
        run = await service.create_run(tenant, experiment.id, name, tags=tags)
        await service.log_batch(
            tenant,
            run.id,
            metrics=[MetricPoint(k, v, 0, 1) for k, v in metrics.items()],
            params=list(params.items()),
        )

    async def names(*order_by, **kwargs):
        page = await service.list_runs(
            tenant, experiment_id=experiment.id, order_by=order_by, **kwargs
        )
        return [r.name for r in page.items]

    # Runs without the key (or with a NaN) last in either direction (among them, newest first).
    assert await names("metrics.sharpe DESC") == ["c", "a", "b", "d"]
    assert await names("metrics.sharpe") == ["b", "a", "c", "d"]
    by_loss = await names("metrics.loss ASC")
    assert by_loss[0] == "c" and sorted(by_loss[1:]) == ["a", "b", "d"]
    assert await names("params.lr DESC") == ["d", "a", "b", "c"]
    # Ties of the first clause are ordered by the next, then newest first.
    assert await names("tags.team DESC", "params.lr ASC") == ["a", "d", "c", "b"]
    assert await names("attributes.run_name DESC") == ["d", "c", "b", "a"]
    # Paging keeps the order.
    assert await names("metrics.sharpe DESC", limit=2, offset=1) == ["a", "b"]
    for bad in ["metrics.sharpe UP", "datasets.name", "attributes.nope DESC", "x, y"]:
        with pytest.raises(InvalidArgument) as excinfo:
            await service.list_runs(tenant, order_by=[bad])
        assert reason(excinfo) == "INVALID_ORDER_BY", bad


async def test_list_runs_without_the_total_pages_through_the_same_runs(service, tenant):
    experiment = await make_experiment(service, tenant)
    for i in range(5):
        run = await service.create_run(tenant, experiment.id, f"r{i}", tags={"odd": str(i % 2)})
        await service.log_batch(tenant, run.id, metrics=[MetricPoint("score", i / 10, 0, 1)])

    async def chain(**kwargs) -> tuple[list[list[str]], set[int]]:
        pages, totals, token = [], set(), ""
        while True:
            found = await service.list_runs(
                tenant, experiment_id=experiment.id, limit=2, page_token=token, **kwargs
            )
            pages.append([run.id for run in found.items])
            totals.add(found.total)
            token = found.next_page_token
            if not token:
                return pages, totals

    counted, totals = await chain()
    assert totals == {5} and [len(p) for p in counted] == [2, 2, 1]
    uncounted, totals = await chain(include_total=False)
    assert uncounted == counted and totals == {-1}
    # A page that ends exactly at the last match says so without a count.
    exact = await service.list_runs(
        tenant, experiment_id=experiment.id, filter_text="tags.odd = '1'", include_total=False
    )
    assert len(exact.items) == 2 and exact.next_page_token == "" and exact.total == -1
    # An unknown or another tenant's experiment is still told apart from an empty page.
    with pytest.raises(NotFound):
        await service.list_runs(tenant, experiment_id=str(uuid.uuid4()), include_total=False)


async def test_compare_runs(service, tenant):
    experiment = await make_experiment(service, tenant)
    ids = []
    for lr, sharpe, mse in [("0.1", 1.0, 0.3), ("0.01", 2.0, 0.4), ("0.1", None, 0.1)]:
        run = await service.create_run(tenant, experiment.id)
        metrics = [MetricPoint("mse", mse, 0, 1)]
        if sharpe is not None:
            metrics.append(MetricPoint("sharpe", sharpe, 0, 1))
        await service.log_batch(tenant, run.id, metrics=metrics, params=[("lr", lr)])
        ids.append(run.id)
    result = await service.compare_runs(tenant, ids)
    assert [r.id for r in result.runs] == ids
    assert result.metric_diff["mse"].best_id == ids[2]
    assert result.metric_diff["sharpe"].best_id == ids[1]
    assert result.metric_diff["sharpe"].values[ids[2]] is None
    assert result.param_diff["lr"].varies is True
    only = await service.compare_runs(tenant, ids[:2], metrics=["mse"], maximize=["mse"])
    assert list(only.metric_diff) == ["mse"] and only.metric_diff["mse"].best_id == ids[1]
    with pytest.raises(NotFound) as excinfo:
        await service.compare_runs(tenant, [ids[0], "x", "y"])
    assert excinfo.value.metadata["run_ids"] == "x,y"
