"""The backtest of a model's predictions: positions from predictions, the P&L of each bar after
costs, and the statistics of a P&L series (docs/statistics.md states every definition)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from mlmesh_common.quant.errors import StatisticsError
from mlmesh_common.quant.sharpe import probabilistic_sharpe

POSITION_MODES = ("sign", "long_only", "proportional")
TRADING_DAYS = 252
SESSION_HOURS = 6.5
# Bars per year of one unit of each timeframe suffix; an n-unit bar has 1/n as many.
_BARS_PER_YEAR = {
    "m": TRADING_DAYS * SESSION_HOURS * 60,
    "min": TRADING_DAYS * SESSION_HOURS * 60,
    "h": TRADING_DAYS * SESSION_HOURS,
    "d": TRADING_DAYS,
    "w": 52,
    "wk": 52,
    "mo": 12,
}
_TIMEFRAME = re.compile(r"(\d+)(min|mo|wk|m|h|d|w)")


def periods_per_year(timeframe: str) -> float:
    """Bars per year of a timeframe: 1d 252, 1h 252 x 6.5, 1m (or 1min) 252 x 6.5 x 60, 1w 52,
    1mo 12; n units give 1/n as many (4h: 409.5). Anything else (1M too) is an error."""
    # Case does not matter, except that "1M" means a minute to some and a month to others.
    match = None if "M" in timeframe else _TIMEFRAME.fullmatch(timeframe.strip().lower())
    if not match or int(match.group(1)) == 0:
        raise StatisticsError(
            f"unknown timeframe {timeframe!r}: use <n>m, <n>h, <n>d, <n>w or <n>mo "
            "(e.g. 1d, 1h, 15m), or give periods_per_year",
            reason="UNKNOWN_TIMEFRAME",
        )
    return _BARS_PER_YEAR[match.group(2)] / int(match.group(1))


def prediction_scale(train_predictions: object) -> float:
    """The std (ddof=1) of the training rows' predictions: `proportional` divides by it."""
    values = np.asarray(train_predictions, dtype=float)
    if values.size < 2 or not np.isfinite(values).all():
        raise StatisticsError(
            "the prediction scale needs at least 2 finite training predictions",
            reason="TOO_FEW_OBSERVATIONS",
        )
    if np.ptp(values) == 0:
        raise StatisticsError(
            "the training predictions have zero variance: no proportional scale",
            reason="ZERO_VARIANCE",
        )
    return float(np.std(values, ddof=1))


def positions(predictions: object, mode: str = "sign", scale: float | None = None) -> np.ndarray:
    """sign: -1, 0 or +1; long_only: 1 where the prediction is > 0, else 0; proportional:
    prediction / scale clipped to [-1, 1]."""
    values = np.asarray(predictions, dtype=float)
    if not np.isfinite(values).all():
        raise StatisticsError("predictions must be finite", reason="NON_FINITE_PREDICTIONS")
    if mode == "sign":
        return np.sign(values)
    if mode == "long_only":
        return (values > 0).astype(float)
    if mode == "proportional":
        if scale is None or not (math.isfinite(scale) and scale > 0):
            raise StatisticsError(
                f"proportional positions need a positive scale, got {scale}",
                reason="INVALID_SCALE",
            )
        return np.clip(values / scale, -1.0, 1.0)
    raise StatisticsError(
        f"position must be one of {', '.join(POSITION_MODES)}, got {mode!r}",
        reason="INVALID_POSITION_MODE",
    )


def pnl(position: object, next_returns: object, cost_bps: float = 0.0) -> np.ndarray:
    """P&L of bar t: position_t x r_{t+1} - cost x |position_t - position_{t-1}|, with cost =
    cost_bps / 10,000. Every series starts flat: position_{-1} = 0."""
    held = np.asarray(position, dtype=float)
    returns = np.asarray(next_returns, dtype=float)
    if held.shape != returns.shape or held.ndim != 1:
        raise StatisticsError(
            f"positions {held.shape} and next-bar returns {returns.shape} must be equal-length "
            "series",
            reason="INVALID_SHAPE",
        )
    if not np.isfinite(returns).all():
        raise StatisticsError("next-bar returns must be finite", reason="NON_FINITE_RETURNS")
    if not (math.isfinite(cost_bps) and cost_bps >= 0):
        raise StatisticsError(f"cost_bps must be >= 0, got {cost_bps}", reason="INVALID_COST")
    trades = np.abs(np.diff(held, prepend=0.0))
    return held * returns - cost_bps / 10_000 * trades


@dataclass(frozen=True)
class BacktestStats:
    """Statistics of one P&L series; NaN where a statistic is undefined (see each field)."""

    # Annualized: mean / std (ddof=1) x sqrt(periods_per_year); NaN under 2 bars or zero variance.
    sharpe: float
    # Annualized: mean / sqrt(mean(min(pnl, 0)^2)) x sqrt(periods_per_year); NaN without a loss.
    sortino: float
    # Largest fall of the compounded equity from its running peak (starting at 1), as a fraction.
    max_drawdown: float
    # Annualized compounded return / max_drawdown; NaN without a drawdown.
    calmar: float
    # prod(1 + pnl) - 1.
    total_return: float
    # Among bars with a position, the fraction where position x r_{t+1} > 0; NaN without one.
    hit_rate: float
    # Mean |position_t - position_{t-1}| per bar, the entry from flat included.
    turnover: float
    n_bars: int


def backtest_stats(
    position: object, next_returns: object, cost_bps: float, periods_per_year: float
) -> BacktestStats:
    held = np.asarray(position, dtype=float)
    returns = np.asarray(next_returns, dtype=float)
    series = pnl(held, returns, cost_bps)
    if not (math.isfinite(periods_per_year) and periods_per_year > 0):
        raise StatisticsError(
            f"periods_per_year must be > 0, got {periods_per_year}",
            reason="INVALID_PERIODS_PER_YEAR",
        )
    n = series.size
    if n == 0:
        raise StatisticsError("a backtest needs at least 1 bar", reason="TOO_FEW_OBSERVATIONS")
    root = math.sqrt(periods_per_year)
    mean = float(series.mean())
    # Every bar equal (a flat strategy) has no Sharpe; ptp is exact where a tiny std is not.
    std = float(series.std(ddof=1)) if n > 1 and np.ptp(series) > 0 else 0.0
    downside = math.sqrt(float(np.mean(np.minimum(series, 0.0) ** 2)))
    equity = np.cumprod(1.0 + series)
    peak = np.maximum.accumulate(np.concatenate(([1.0], equity)))[1:]
    max_drawdown = float(np.max(1.0 - equity / peak))
    total = float(equity[-1] - 1.0)
    annual = (1.0 + total) ** (periods_per_year / n) - 1.0 if total > -1 else -1.0
    active = held != 0
    return BacktestStats(
        sharpe=mean / std * root if std > 0 else math.nan,
        sortino=mean / downside * root if downside > 0 else math.nan,
        max_drawdown=max_drawdown,
        calmar=annual / max_drawdown if max_drawdown > 0 else math.nan,
        total_return=total,
        hit_rate=float(np.mean(held[active] * returns[active] > 0)) if active.any() else math.nan,
        turnover=float(np.mean(np.abs(np.diff(held, prepend=0.0)))),
        n_bars=n,
    )


def equity_curve(series: object) -> np.ndarray:
    """Compounded equity after each bar, starting from 1."""
    return np.cumprod(1.0 + np.asarray(series, dtype=float))


@dataclass(frozen=True)
class WalkForward:
    """The backtest of walk-forward folds: each fold alone, and the stitched series."""

    folds: list[BacktestStats]
    stitched: BacktestStats
    # The stitched series' P&L and compounded equity, bar by bar.
    pnl: np.ndarray
    equity: np.ndarray
    # PSR(0) of the stitched P&L; NaN where undefined (under 2 bars, zero variance).
    psr: float


def walk_forward(
    fold_positions: list[np.ndarray],
    fold_next_returns: list[np.ndarray],
    cost_bps: float,
    periods_per_year: float,
) -> WalkForward:
    """Folds in time order. Each fold's backtest starts flat; the stitched series is one
    backtest over the folds' bars concatenated, so a fold boundary trades only the change of
    position (docs/statistics.md)."""
    if not fold_positions or len(fold_positions) != len(fold_next_returns):
        raise StatisticsError(
            "walk-forward needs one positions and one next-returns series per fold",
            reason="INVALID_SHAPE",
        )
    folds = [
        backtest_stats(held, returns, cost_bps, periods_per_year)
        for held, returns in zip(fold_positions, fold_next_returns, strict=True)
    ]
    held = np.concatenate([np.asarray(p, dtype=float) for p in fold_positions])
    returns = np.concatenate([np.asarray(r, dtype=float) for r in fold_next_returns])
    series = pnl(held, returns, cost_bps)
    try:
        psr = float(probabilistic_sharpe(series))
    except StatisticsError:
        psr = math.nan
    return WalkForward(
        folds=folds,
        stitched=backtest_stats(held, returns, cost_bps, periods_per_year),
        pnl=series,
        equity=equity_curve(series),
        psr=psr,
    )
