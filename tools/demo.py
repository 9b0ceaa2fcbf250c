"""`make demo`: logs a handful of realistic research runs to the mesh's MLflow server with the real
mlflow client, so that `curl localhost:8080/api/v1/tracking/runs` has something to show, and the
same runs to the experiment registry through the gateway's REST API, so that the web UI at
http://127.0.0.1:8080/ shows experiments, runs and their histories.

The data is a simulated daily price series; the backtests are momentum strategies really run on
it, and the training runs fit an autoregressive forecaster fold by fold (walk-forward).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
import uuid

import numpy as np
import requests
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

EXPERIMENT = "mlmesh-demo"
TRADING_DAYS = 252


def _now_ms() -> int:
    return int(time.time() * 1000)


def _git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _prices(seed: int, days: int = 1500) -> np.ndarray:
    rng = np.random.default_rng(seed)
    returns = rng.normal(0.0003, 0.011, days) + 0.05 * np.sin(np.arange(days) / 40) * 0.002
    return 100 * np.exp(np.cumsum(returns))


def _backtest(prices: np.ndarray, lookback: int) -> tuple[dict[str, float], np.ndarray]:
    returns = np.diff(np.log(prices))
    momentum = np.convolve(returns, np.ones(lookback), "valid")[:-1]
    position = np.sign(momentum)
    strategy = position * returns[lookback:]
    equity = np.exp(np.cumsum(strategy))
    drawdown = 1 - equity / np.maximum.accumulate(equity)
    sharpe = strategy.mean() / strategy.std() * np.sqrt(TRADING_DAYS)
    downside = strategy[strategy < 0].std() or 1e-9
    metrics = {
        "sharpe": float(sharpe),
        "sortino": float(strategy.mean() / downside * np.sqrt(TRADING_DAYS)),
        "total_return": float(equity[-1] - 1),
        "max_drawdown": float(drawdown.max()),
        "hit_rate": float((strategy > 0).mean()),
    }
    return metrics, equity


def _walk_forward(prices: np.ndarray, lags: int, folds: int) -> list[dict[str, float]]:
    returns = np.diff(np.log(prices))
    x = np.column_stack([returns[i : len(returns) - lags + i] for i in range(lags)])
    y = returns[lags:]
    fold_size = len(y) // (folds + 1)
    results = []
    for fold in range(folds):
        train_end = fold_size * (fold + 1)
        test = slice(train_end, train_end + fold_size)
        coef, *_ = np.linalg.lstsq(x[:train_end], y[:train_end], rcond=None)
        predicted = x[test] @ coef
        error = predicted - y[test]
        results.append(
            {
                "mse": float(np.mean(error**2)),
                "mae": float(np.mean(np.abs(error))),
                "directional_accuracy": float(np.mean(np.sign(predicted) == np.sign(y[test]))),
            }
        )
    return results


def _registry(api: str, name: str, strategy_id: str, runs: list[dict], record: str) -> str:
    """One registry experiment holding `runs` (name, tags, params, metrics as (key, value,
    step) triples), through the REST API as any client would, its record carrying the best
    run's metrics by `record` (a maximized metric); returns its id."""
    session = requests.Session()

    def call(method: str, path: str, body: object) -> dict:
        response = session.request(method, api + path, json=body, timeout=60)
        response.raise_for_status()
        return response.json()

    def final(run: dict) -> dict[str, float]:
        return {key: value for key, value, _ in run["metrics"]}  # the last point of each key

    best = max(runs, key=lambda run: final(run)[record])
    body = {"name": name, "strategy_id": strategy_id, "metrics": final(best)}
    experiment = call("POST", "/experiments", body)
    for run in runs:
        created = call(
            "POST",
            "/experiments/runs",
            {"experiment_id": experiment["id"], "name": run["name"], "tags": run["tags"]},
        )
        now = _now_ms()
        call(
            "POST",
            f"/experiments/runs/{created['id']}/log-batch",
            {
                "metrics": [
                    {"key": key, "value": value, "step": step, "timestamp": now + step}
                    for key, value, step in run["metrics"]
                ],
                "params": [{"key": key, "value": value} for key, value in run["params"].items()],
            },
        )
        call("POST", f"/experiments/runs/{created['id']}/end", {})
    return experiment["id"]


def main() -> None:
    uri = os.environ.get("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(EXPERIMENT)
    commit = _git_commit()
    prices = _prices(seed=7)
    dataset_version = hashlib.sha256(prices.tobytes()).hexdigest()[:12]
    strategies = {"momentum": str(uuid.uuid4()), "mean-reversion": str(uuid.uuid4())}
    logged = []
    registry: dict[str, list[dict]] = {"training": [], "backtest": []}

    for lags in (3, 5, 10):
        folds = _walk_forward(prices, lags, folds=5)
        tags = {
            "run_type": "training",
            "strategy_id": strategies["momentum"],
            "git_commit": commit,
            "dataset_version": dataset_version,
            "feature_version": f"lags-{lags}",
            "model_version": "1",
        }
        run = client.create_run(experiment_id, run_name=f"ar-lags-{lags}", tags=tags)
        run_id = run.info.run_id
        metrics = [
            Metric(f"fold_{name}", value, _now_ms(), step)
            for step, fold in enumerate(folds)
            for name, value in fold.items()
        ]
        for name in folds[0]:
            values = [fold[name] for fold in folds]
            metrics.append(Metric(f"mean_{name}", float(np.mean(values)), _now_ms(), 0))
            metrics.append(Metric(f"std_{name}", float(np.std(values)), _now_ms(), 0))
        params = [Param("model", "linear_ar"), Param("lags", str(lags)), Param("cv", "expanding")]
        client.log_batch(run_id, metrics=metrics, params=params)
        client.set_terminated(run_id)
        logged.append(run_id)
        registry["training"].append(
            {
                "name": f"ar-lags-{lags}",
                "tags": tags,
                "params": {p.key: p.value for p in params},
                "metrics": [(m.key, m.value, m.step) for m in metrics],
            }
        )

    for lookback in (20, 60, 120):
        metrics, equity = _backtest(prices, lookback)
        tags = {
            "run_type": "backtest",
            "strategy_id": strategies["momentum"],
            "git_commit": commit,
            "dataset_version": dataset_version,
            "signal_version": f"mom-{lookback}",
        }
        run = client.create_run(experiment_id, run_name=f"momentum-{lookback}d", tags=tags)
        run_id = run.info.run_id
        curve = [Metric("equity", float(v), _now_ms(), step) for step, v in enumerate(equity[::20])]
        client.log_batch(
            run_id,
            metrics=[Metric(k, v, _now_ms(), 0) for k, v in metrics.items()] + curve,
            params=[Param("lookback_days", str(lookback)), Param("rebalance", "daily")],
            tags=[RunTag("universe", "simulated-index")],
        )
        client.set_terminated(run_id)
        logged.append(run_id)
        registry["backtest"].append(
            {
                "name": f"momentum-{lookback}d",
                "tags": {**tags, "universe": "simulated-index"},
                "params": {"lookback_days": str(lookback), "rebalance": "daily"},
                "metrics": [(k, v, 0) for k, v in metrics.items()]
                + [(m.key, m.value, m.step) for m in curve],
            }
        )

    print(f"logged {len(logged)} runs to {uri} (experiment {EXPERIMENT!r}):")
    for run_id in logged:
        print(f"  {run_id}")
    print("try: curl 'http://127.0.0.1:8080/api/v1/tracking/runs?run_type=backtest'")
    gateway = os.environ.get("MLMESH_GATEWAY_URL", "http://127.0.0.1:8080")
    suffix = uuid.uuid4().hex[:6]
    for kind, title, record in (
        ("training", "ar-forecaster", "mean_directional_accuracy"),
        ("backtest", "momentum-backtests", "sharpe"),
    ):
        experiment = _registry(
            f"{gateway}/api/v1", f"{title}-{suffix}", strategies["momentum"], registry[kind], record
        )
        print(f"registry experiment {title}-{suffix}: {gateway}/experiments/{experiment}")


if __name__ == "__main__":
    main()
