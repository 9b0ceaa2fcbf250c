"""`make demo`, second half: trains a real forecaster on the S&P 500 through the REST API — bars
and features datasets built from the daily prices shipped with `arch`, a LightGBM model, and a
cross-validated training whose folds run on Ray, backtested out of sample after 5 bps costs —
then tunes it (with the study's PBO and its best trial's deflated Sharpe ratio) and ranks three
plugins."""

from __future__ import annotations

import io
import json
import sys

import pandas as pd
import requests

from gateway.envoy_config import GatewaySettings


def _rsi(prices: pd.Series, window: int = 14) -> pd.Series:
    change = prices.diff()
    gain = change.clip(lower=0).rolling(window).mean()
    loss = (-change.clip(upper=0)).rolling(window).mean()
    return 100 - 100 / (1 + gain / loss)


def sp500_tables(rows: int = 2500) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(bars, features) of the last `rows` trading days; features use only data up to each day."""
    from arch.data import sp500

    prices = sp500.load().iloc[-rows:]
    bars = prices.rename(columns=str.lower).drop(columns=["adj close"])
    close = bars["close"]
    returns = close.pct_change()
    features = pd.DataFrame(
        {
            "ret_lag_1": returns,
            "ret_lag_5": returns.shift(4),
            "ret_lag_20": returns.shift(19),
            "vol_20": returns.rolling(20).std(),
            "mom_20": close.pct_change(20),
            "rsi_14": _rsi(close),
        }
    ).dropna()
    bars.index.name = features.index.name = "timestamp"
    return bars, features


# Sign positions from the predictions, 5 bps per unit traded, 252 daily bars a year.
BACKTEST = {"position": "sign", "cost_bps": 5}


def _number(value, digits: int = 3) -> str:
    """A statistic for display: NaN (undefined) or absent is "n/a"."""
    if value is None or isinstance(value, str):
        return "n/a"
    return f"{value:.{digits}f}"


def _csv(frame: pd.DataFrame) -> bytes:
    buffer = io.StringIO()
    frame.to_csv(buffer)
    return buffer.getvalue().encode()


def _call(session: requests.Session, method: str, url: str, **kwargs) -> dict:
    response = session.request(method, url, timeout=600, **kwargs)
    if response.status_code >= 400:
        sys.exit(f"{method} {url} -> {response.status_code}: {response.text}")
    return response.json()


def main() -> None:
    gateway = GatewaySettings()
    api = f"http://{gateway.host}:{gateway.port}/api/v1"
    bars, features = sp500_tables()
    with requests.Session() as session:
        uploads = {}
        for kind, frame in (("bars", bars), ("features", features)):
            uploads[kind] = _call(
                session,
                "POST",
                f"{api}/datasets",
                params={"kind": kind, "symbol": "SPX", "name": f"sp500-{kind}"},
                files={"file": (f"sp500-{kind}.csv", _csv(frame), "text/csv")},
            )
        model = _call(
            session,
            "POST",
            f"{api}/models",
            json={
                "name": "spx-lightgbm",
                "model_type": "lightgbm",
                "parameters": {"n_estimators": 200, "learning_rate": 0.03},
            },
        )
        result = _call(
            session,
            "POST",
            f"{api}/models/{model['id']}/train",
            json={
                "dataset": {"feature_ids": [uploads["features"]["id"]], "symbol": "SPX"},
                "cv": {"method": "expanding", "n_splits": 5, "test_size": 0.1},
                "strategy_id": "spx-next-day",
                "seed": 42,
                "backtest": BACKTEST,
            },
        )
        dataset = {"feature_ids": [uploads["features"]["id"]], "symbol": "SPX"}
        cv = {"method": "expanding", "n_splits": 5, "test_size": 0.1}
        study = _call(
            session,
            "POST",
            f"{api}/models/tune",
            json={
                "plugin_key": "ml.lightgbm",
                "dataset": dataset,
                "cv": cv,
                "fixed_params": {"n_estimators": 100},
                "n_trials": 12,
                "seed": 42,
                "strategy_id": "spx-next-day",
                "backtest": BACKTEST,
            },
        )
        board = _call(
            session,
            "POST",
            f"{api}/models/automl",
            json={
                "dataset": dataset,
                "cv": cv,
                "metric": "directional_accuracy",
                "seed": 42,
                "candidates": {
                    "ml.lightgbm": {"n_estimators": 100},
                    "ml.random_forest": {"n_estimators": 100, "max_depth": 4},
                    "ml.xgboost": {"n_estimators": 100, "max_depth": 3},
                },
                "ensemble_top_k": 2,
                "strategy_id": "spx-next-day",
            },
        )
    summary = {
        k: round(v, 6) for k, v in result["cv_metrics"].items() if k.startswith(("mean_", "std_"))
    }
    print(f"trained model {model['id']} (version {result['model_version']}) on SPX:")
    print(json.dumps(summary, indent=2))
    print(f"MLflow run {result['mlflow_run_id']}, experiment record {result['experiment_id']}")
    stitched = result["backtest"]["stitched"]
    print(
        f"out-of-sample backtest after {BACKTEST['cost_bps']} bps costs, {stitched['n_bars']} "
        f"bars stitched: Sharpe {_number(stitched['sharpe'])} (annualized), PSR(0) "
        f"{_number(result['backtest']['psr'])}, max drawdown {_number(stitched['max_drawdown'])}, "
        f"total return {_number(stitched['total_return'])}; registry run "
        f"{result['registry_run_id']} holds oos_return/oos_equity"
    )
    print(f"try: curl {api}/models/{model['id']}")
    print(
        f"tuned ml.lightgbm, study {study['study_name']}: {study['n_trials_completed']} trials, "
        f"best mean_mse {study['best_value']:.6g} with {json.dumps(study['best_params'])}"
    )
    pbo = study["pbo"]
    if pbo.get("unavailable_reason"):
        print(f"  no PBO/DSR: {pbo['unavailable_message']}")
    else:
        print(
            f"  PBO {_number(pbo.get('pbo'))} over {pbo['n_trials']} trials "
            f"({pbo['n_observations']} bars, {pbo['n_blocks']} blocks); best trial "
            f"{study['best_trial']}: Sharpe {_number(study.get('best_sharpe'))}, DSR "
            f"{_number(study.get('best_dsr'))} (SR0 {_number(pbo.get('sr0'))})"
        )
    print(f"AutoML leaderboard by mean_directional_accuracy ({board['direction']}):")
    for row in board["leaderboard"]:
        score = "failed" if row.get("score") is None else f"{row['score']:.4f}"
        print(f"  {row['rank']}. {row['plugin_key']}: {score}")


if __name__ == "__main__":
    main()
