"""Runs logged to a real MLflow server for the tracking tests: tenants, lineage tags, step
metrics, a quoted tag value, and enough bulk runs to page through."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

BASE_TIME = 1_700_000_000_000
BULK_RUNS = 105


@dataclass
class Seed:
    """Ids of the runs logged for the tracking tests, and the experiments they live in."""

    experiments: dict[str, str] = field(default_factory=dict)
    runs: dict[str, str] = field(default_factory=dict)
    bulk: list[str] = field(default_factory=list)
    prefix: str = ""


def _run(client, experiment_id, start, *, tags=None, params=None, metrics=(), end=True, name=""):
    run = client.create_run(experiment_id, start_time=start, tags=tags or {}, run_name=name)
    run_id = run.info.run_id
    if metrics or params:
        client.log_batch(
            run_id,
            metrics=[Metric(key, value, BASE_TIME + step, step) for key, value, step in metrics],
            params=[Param(k, v) for k, v in (params or {}).items()],
        )
    if end:
        client.set_terminated(run_id, "FINISHED", end_time=start + 5_000)
    return run_id


def log_seed_runs(tracking_uri: str) -> Seed:
    client = MlflowClient(tracking_uri=tracking_uri)
    prefix = f"trk-{uuid.uuid4().hex[:8]}"
    seed = Seed(prefix=prefix)
    for name in ("main", "other", "hidden"):
        seed.experiments[name] = client.create_experiment(f"{prefix}-{name}")
    main, other = seed.experiments["main"], seed.experiments["other"]
    lineage = {"strategy_id": "S1", "git_commit": "abc123", "dataset_version": "d1"}
    seed.runs["train_a"] = _run(
        client,
        main,
        BASE_TIME + 1_000,
        name="train-a",
        tags={**lineage, "run_type": "training"},
        params={"lr": "0.01", "depth": "3"},
        metrics=[("mse", 0.5 - 0.01 * s, s) for s in range(10)]
        + [("sharpe", 1.2, 0), ("val_acc", 0.61, 0)],
    )
    seed.runs["train_b"] = _run(
        client,
        main,
        BASE_TIME + 2_000,
        name="train-b",
        tags={**lineage, "run_type": "training"},
        params={"lr": "0.1", "depth": "3"},
        metrics=[("mse", 0.3, 0), ("sharpe", 1.9, 0), ("val_acc", 0.55, 0)],
    )
    seed.runs["backtest"] = _run(
        client,
        main,
        BASE_TIME + 3_000,
        name="backtest",
        end=False,
        tags={"strategy_id": "S2", "run_type": "backtest"},
        params={"lr": "0.1"},
        metrics=[("sharpe", 0.4, 0)],
    )
    seed.runs["quoted"] = _run(
        client,
        main,
        BASE_TIME + 4_000,
        name="quoted",
        tags={"strategy_id": "S2", "run_type": "walk'forward"},
    )
    seed.runs["acme"] = _run(
        client,
        main,
        BASE_TIME + 5_000,
        name="acme-run",
        tags={"strategy_id": "S1", "run_type": "training", "mlmesh.tenant": "acme"},
        metrics=[("mse", 0.1, 0)],
    )
    seed.runs["other_exp"] = _run(
        client,
        other,
        BASE_TIME + 6_000,
        name="other-exp",
        tags={"strategy_id": "S1", "run_type": "training"},
    )
    seed.runs["hidden"] = _run(
        client,
        seed.experiments["hidden"],
        BASE_TIME + 7_000,
        name="hidden",
        tags={"strategy_id": "S1", "run_type": "training"},
    )
    with ThreadPoolExecutor(8) as pool:
        seed.bulk = list(
            pool.map(
                lambda i: _run(
                    client,
                    other,
                    BASE_TIME + 10_000 + i,
                    name=f"cpcv-{i}",
                    tags={"strategy_id": "S3", "run_type": "cpcv"},
                ),
                range(BULK_RUNS),
            )
        )
    return seed
