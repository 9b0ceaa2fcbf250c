"""The backtest of predictions recomputed bar by bar in plain Python, to 1e-9."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from mlmesh_common import quant


def loop_backtest(predictions, next_returns, mode, cost_bps, ppy, scale=None):
    """Every definition of docs/statistics.md, one bar at a time, without numpy."""
    held, pnl, previous = [], [], 0.0
    for prediction, r in zip(predictions, next_returns, strict=True):
        if mode == "sign":
            position = 1.0 if prediction > 0 else -1.0 if prediction < 0 else 0.0
        elif mode == "long_only":
            position = 1.0 if prediction > 0 else 0.0
        else:
            position = min(1.0, max(-1.0, prediction / scale))
        pnl.append(position * r - cost_bps / 10_000 * abs(position - previous))
        held.append((position, abs(position - previous), position * r))
        previous = position
    equity, peak, drawdown = 1.0, 1.0, 0.0
    for p in pnl:
        equity *= 1 + p
        peak = max(peak, equity)
        drawdown = max(drawdown, 1 - equity / peak)
    n = len(pnl)
    mean = sum(pnl) / n
    downside = math.sqrt(sum(min(p, 0.0) ** 2 for p in pnl) / n)
    annual = equity ** (ppy / n) - 1
    active = [gross for position, _, gross in held if position != 0]
    return {
        "sharpe": mean / statistics.stdev(pnl) * math.sqrt(ppy),
        "sortino": mean / downside * math.sqrt(ppy),
        "max_drawdown": drawdown,
        "calmar": annual / drawdown,
        "total_return": equity - 1,
        "hit_rate": sum(1 for gross in active if gross > 0) / len(active),
        "turnover": sum(trade for _, trade, _ in held) / n,
        "n_bars": n,
        "pnl": pnl,
    }


@pytest.mark.parametrize("mode", quant.POSITION_MODES)
@pytest.mark.parametrize("cost_bps", [0.0, 5.0])
def test_backtest_matches_a_bar_by_bar_recomputation(mode, cost_bps):
    rng = np.random.default_rng(42)
    next_returns = rng.normal(0.0003, 0.012, 300)
    predictions = 0.4 * next_returns + rng.normal(0, 0.01, 300)
    predictions[::17] = 0.0
    train_predictions = rng.normal(0, 0.008, 500)
    scale = quant.prediction_scale(train_predictions) if mode == "proportional" else None
    held = quant.positions(predictions, mode, scale)
    stats = quant.backtest_stats(held, next_returns, cost_bps, 252)
    expected = loop_backtest(
        predictions.tolist(), next_returns.tolist(), mode, cost_bps, 252, scale
    )
    assert np.allclose(quant.pnl(held, next_returns, cost_bps), expected.pop("pnl"), atol=1e-12)
    for name, value in expected.items():
        assert getattr(stats, name) == pytest.approx(value, rel=1e-9, abs=1e-12), name


def test_prediction_scale_is_the_training_std():
    values = [0.1, -0.3, 0.2, 0.05]
    assert quant.prediction_scale(values) == pytest.approx(statistics.stdev(values))
    assert quant.positions([0.5, -0.5, 0.01], "proportional", 0.1).tolist() == pytest.approx(
        [1.0, -1.0, 0.1]
    )


def test_costs_charge_the_entry_from_flat_and_every_change():
    series = quant.pnl([1.0, 1.0, -1.0, 0.0], [0.01, 0.02, -0.01, 0.03], cost_bps=10)
    assert series.tolist() == pytest.approx([0.01 - 0.001, 0.02, 0.01 - 0.002, -0.001])


def test_undefined_statistics_are_nan():
    flat = quant.backtest_stats([0.0, 0.0, 0.0], [0.01, -0.02, 0.01], 0, 252)
    assert math.isnan(flat.sharpe) and math.isnan(flat.sortino) and math.isnan(flat.calmar)
    assert math.isnan(flat.hit_rate)
    assert (flat.max_drawdown, flat.total_return, flat.turnover, flat.n_bars) == (0, 0, 0, 3)


@pytest.mark.parametrize(
    ("timeframe", "expected"),
    [
        ("1d", 252),
        ("1h", 252 * 6.5),
        ("4h", 252 * 6.5 / 4),
        ("15m", 252 * 6.5 * 4),
        ("1min", 252 * 6.5 * 60),
        ("1w", 52),
        ("1mo", 12),
        ("2d", 126),
        ("1D", 252),
    ],
)
def test_periods_per_year(timeframe, expected):
    assert quant.periods_per_year(timeframe) == pytest.approx(expected)


@pytest.mark.parametrize("timeframe", ["", "1y", "daily", "0d", "1.5h", "d", "1M"])
def test_unknown_timeframes_are_errors(timeframe):
    with pytest.raises(quant.StatisticsError) as error:
        quant.periods_per_year(timeframe)
    assert error.value.reason == "UNKNOWN_TIMEFRAME"


@pytest.mark.parametrize(
    ("call", "reason"),
    [
        (lambda: quant.positions([0.1], "short_only"), "INVALID_POSITION_MODE"),
        (lambda: quant.positions([0.1], "proportional"), "INVALID_SCALE"),
        (lambda: quant.positions([math.nan], "sign"), "NON_FINITE_PREDICTIONS"),
        (lambda: quant.pnl([1.0, 1.0], [0.01], 0), "INVALID_SHAPE"),
        (lambda: quant.pnl([1.0], [0.01], -1), "INVALID_COST"),
        (lambda: quant.backtest_stats([], [], 0, 252), "TOO_FEW_OBSERVATIONS"),
        (lambda: quant.backtest_stats([1.0], [0.01], 0, 0), "INVALID_PERIODS_PER_YEAR"),
        (lambda: quant.prediction_scale([0.2, 0.2, 0.2]), "ZERO_VARIANCE"),
    ],
)
def test_bad_input_is_a_clear_error(call, reason):
    with pytest.raises(quant.StatisticsError) as error:
        call()
    assert error.value.reason == reason


def test_walk_forward_folds_start_flat_and_the_stitched_series_is_continuous():
    rng = np.random.default_rng(8)
    sizes = (40, 35, 50)
    returns = [rng.normal(0.0004, 0.01, n) for n in sizes]
    predictions = [0.5 * r + rng.normal(0, 0.01, r.size) for r in returns]
    held = [quant.positions(p, "sign") for p in predictions]
    result = quant.walk_forward(held, returns, 5.0, 252)
    for fold, p, r in zip(result.folds, predictions, returns, strict=True):
        alone = loop_backtest(p.tolist(), r.tolist(), "sign", 5.0, 252)
        assert fold.sharpe == pytest.approx(alone["sharpe"], rel=1e-9)
    stitched = loop_backtest(
        np.concatenate(predictions).tolist(), np.concatenate(returns).tolist(), "sign", 5.0, 252
    )
    assert np.allclose(result.pnl, stitched.pop("pnl"), atol=1e-12)
    for name, value in stitched.items():
        assert getattr(result.stitched, name) == pytest.approx(value, rel=1e-9, abs=1e-12), name
    assert result.equity[-1] == pytest.approx(1 + stitched["total_return"], rel=1e-12)
    assert result.psr == pytest.approx(quant.probabilistic_sharpe(result.pnl), abs=1e-15)


def test_a_fold_boundary_trades_only_the_change_of_position():
    result = quant.walk_forward(
        [np.array([1.0, 1.0]), np.array([1.0, -1.0])],
        [np.array([0.01, 0.02]), np.array([0.03, 0.01])],
        10.0,
        252,
    )
    # Stitched: flat -> long pays once; the boundary keeps the position; long -> short pays 2.
    assert result.pnl.tolist() == pytest.approx([0.009, 0.02, 0.03, -0.012])
    # The second fold alone starts flat and pays its entry.
    second = quant.backtest_stats([1.0, -1.0], [0.03, 0.01], 10.0, 252)
    assert result.folds[1] == second
    assert second.total_return == pytest.approx((1 + 0.029) * (1 - 0.012) - 1)


def test_walk_forward_psr_is_nan_for_a_flat_strategy():
    result = quant.walk_forward([np.zeros(10)], [np.full(10, 0.01)], 0, 252)
    assert math.isnan(result.psr) and math.isnan(result.stitched.sharpe)
