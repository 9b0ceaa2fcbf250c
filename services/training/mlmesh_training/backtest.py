"""The backtest of a cross-validation's out-of-sample predictions, with mlmesh_common.quant: the
request's backtest section checked and resolved, each fold's test predictions turned into
positions and P&L over the bars' next-bar returns, the folds stitched into one out-of-sample
series and, for CPCV, the backtest paths (docs/statistics.md states every convention)."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mlmesh_common import quant
from mlmesh_common.errors import FailedPrecondition, InvalidArgument
from mlmesh_training.cv import CVConfig, group_ranges


@dataclass(frozen=True)
class BacktestSpec:
    """The request's backtest section as given: an empty position means sign, no
    periods_per_year the timeframe's. `given` is False when the request had no section."""

    position: str = ""
    cost_bps: float = 0.0
    periods_per_year: float | None = None
    given: bool = False


@dataclass(frozen=True)
class BacktestConfig:
    position: str
    cost_bps: float
    periods_per_year: float


def resolve(spec: BacktestSpec, timeframe: str) -> BacktestConfig | None:
    """The checked config, before any work starts: bad values are InvalidArgument
    (INVALID_BACKTEST). None when the request has no backtest section and its timeframe gives
    no periods_per_year: such a job runs without a backtest, as before there was one."""
    position = spec.position or "sign"
    if position not in quant.POSITION_MODES:
        raise _bad(
            "position", f"must be one of {', '.join(quant.POSITION_MODES)}, got {position!r}"
        )
    if not _real(spec.cost_bps) or not (math.isfinite(spec.cost_bps) and spec.cost_bps >= 0):
        raise _bad("cost_bps", f"must be a number >= 0, got {spec.cost_bps!r}")
    if spec.cost_bps > 10_000:
        raise _bad("cost_bps", f"must be at most 10000 (100%), got {spec.cost_bps!r}")
    ppy = spec.periods_per_year
    if ppy is not None:
        if not _real(ppy) or not (math.isfinite(ppy) and ppy > 0):
            raise _bad("periods_per_year", f"must be a number > 0, got {ppy!r}")
    else:
        try:
            ppy = quant.periods_per_year(timeframe)
        except quant.StatisticsError as exc:
            if not spec.given:
                return None
            raise _bad("periods_per_year", exc.message) from exc
    return BacktestConfig(position, float(spec.cost_bps), float(ppy))


@dataclass(frozen=True)
class FoldPredictions:
    """One fold's test predictions (NaN where the model predicted nothing) and, for
    `proportional`, the std of its predictions on its own training rows."""

    fold: int
    test: np.ndarray  # the fold's test rows
    predictions: np.ndarray
    train_scale: float = math.nan
    test_groups: tuple[int, ...] = ()  # the CPCV groups the fold tests


@dataclass(frozen=True)
class CPCVResult:
    sharpes: list[float]
    distribution: quant.PathDistribution


@dataclass(frozen=True)
class BacktestResult:
    config: BacktestConfig
    folds: list[tuple[int, quant.BacktestStats]]
    stitched: quant.BacktestStats
    psr: float
    # The stitched series bar by bar: its rows (positions in X), their indices in the bars
    # dataset, times, P&L and equity.
    rows: np.ndarray
    bars: np.ndarray
    times: pd.DatetimeIndex
    pnl: np.ndarray
    equity: np.ndarray
    cpcv: CPCVResult | None = None

    def summary(self) -> dict[str, float]:
        """The stitched statistics as `oos_*` metrics (the model's, MLflow's, the
        Experiment's); undefined (NaN) ones are left out."""
        values = {f"oos_{k}": float(v) for k, v in _stats_dict(self.stitched).items()}
        values["oos_psr"] = self.psr
        if self.cpcv is not None:
            for name in ("mean", "std", "min", "q05", "q50", "q95"):
                values[f"cpcv_sharpe_{name}"] = getattr(self.cpcv.distribution, name)
        return {k: v for k, v in values.items() if math.isfinite(v)}

    def fold_metrics(self) -> list[tuple[int, dict[str, float]]]:
        """Each fold's statistics as `fold_oos_*` metrics, finite ones only."""
        return [
            (
                fold,
                {
                    f"fold_oos_{k}": float(v)
                    for k, v in _stats_dict(stats).items()
                    if math.isfinite(v)
                },
            )
            for fold, stats in self.folds
        ]


def _stats_dict(stats: quant.BacktestStats) -> dict[str, float]:
    return {
        "sharpe": stats.sharpe,
        "sortino": stats.sortino,
        "max_drawdown": stats.max_drawdown,
        "calmar": stats.calmar,
        "total_return": stats.total_return,
        "hit_rate": stats.hit_rate,
        "turnover": stats.turnover,
        "n_bars": stats.n_bars,
    }


def next_returns(close: pd.Series, index: pd.DatetimeIndex) -> pd.Series:
    """r_{t+1} = close[t+1] / close[t] - 1 of the bars, at each training row's bar t."""
    return (close.shift(-1) / close - 1.0).reindex(index)


def fold_positions(config: BacktestConfig, fold: FoldPredictions) -> np.ndarray:
    """The fold's positions; a row the model could not predict (NaN) is flat."""
    predictions = np.asarray(fold.predictions, dtype=float)
    finite = np.isfinite(predictions)
    held = np.zeros(predictions.shape)
    if finite.any():
        scale = fold.train_scale if config.position == "proportional" else None
        try:
            held[finite] = quant.positions(predictions[finite], config.position, scale)
        except quant.StatisticsError as exc:
            raise FailedPrecondition(f"fold {fold.fold}: {exc.message}", reason=exc.reason) from exc
    return held


def run(
    config: BacktestConfig,
    cv: CVConfig,
    n_rows: int,
    folds: list[FoldPredictions],
    returns: pd.Series,
    bar_index: np.ndarray,
) -> BacktestResult:
    """The backtest of the folds (in fold order) over `returns`, the next-bar returns of the
    training rows. Walk-forward and purged k-fold test windows are disjoint and in time order:
    the stitched series is them concatenated. CPCV folds overlap: the stitched series is path 0
    (each group from the first split that tests it), and every path is backtested."""
    values = returns.to_numpy(dtype=float)
    if not np.isfinite(values).all():
        raise FailedPrecondition(
            "the bars lack the next bar's close of some training row", reason="MISSING_NEXT_BAR"
        )
    held = [fold_positions(config, fold) for fold in folds]
    fold_returns = [values[fold.test] for fold in folds]
    try:
        fold_stats = [
            quant.backtest_stats(h, r, config.cost_bps, config.periods_per_year)
            for h, r in zip(held, fold_returns, strict=True)
        ]
        if cv.method == "cpcv":
            stitched_rows, stitched_held, paths = _cpcv(config, cv, n_rows, folds, held, values)
        else:
            stitched_rows = np.concatenate([fold.test for fold in folds])
            stitched_held = np.concatenate(held)
            paths = None
        walk = quant.walk_forward(
            [stitched_held], [values[stitched_rows]], config.cost_bps, config.periods_per_year
        )
    except quant.StatisticsError as exc:
        raise FailedPrecondition(exc.message, reason=exc.reason) from exc
    return BacktestResult(
        config=config,
        folds=[(fold.fold, stats) for fold, stats in zip(folds, fold_stats, strict=True)],
        stitched=walk.stitched,
        psr=walk.psr,
        rows=stitched_rows,
        bars=np.asarray(bar_index)[stitched_rows],
        times=returns.index[stitched_rows],
        pnl=walk.pnl,
        equity=walk.equity,
        cpcv=paths,
    )


@dataclass(frozen=True)
class Backtester:
    """`run` bound to one job's config, CV and data: what a study's or a leaderboard's every
    evaluation is backtested with."""

    config: BacktestConfig
    cv: CVConfig
    n_rows: int
    returns: pd.Series
    bar_index: np.ndarray

    @property
    def train_scale(self) -> bool:
        """Whether evaluations must also give their training-row prediction std."""
        return self.config.position == "proportional"

    def __call__(self, folds: list[FoldPredictions]) -> BacktestResult:
        return run(self.config, self.cv, self.n_rows, folds, self.returns, self.bar_index)

    def record(self, folds: list[FoldPredictions]) -> dict:
        """What a trial keeps: its stitched series and statistics, or why it has none."""
        try:
            result = self(folds)
        except FailedPrecondition as exc:
            return {"oos_error": exc.message}
        return {
            "oos_return": [float(v) for v in result.pnl],
            "oos_sharpe": _finite_or_none(result.stitched.sharpe),
            "oos_psr": _finite_or_none(result.psr),
        }


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _cpcv(config, cv, n_rows, folds, held, values):
    groups = group_ranges(n_rows, cv.n_splits)
    pieces: dict[tuple[int, int], np.ndarray] = {}
    for split, (fold, positions) in enumerate(zip(folds, held, strict=True)):
        for group in fold.test_groups:
            start, stop = groups[group]
            pieces[split, group] = positions[(fold.test >= start) & (fold.test < stop)]
    group_returns = {g: values[a:b] for g, (a, b) in enumerate(groups)}
    sharpes = quant.path_sharpes(
        cv.n_splits,
        cv.n_test_splits,
        pieces,
        group_returns,
        config.cost_bps,
        config.periods_per_year,
    )
    first = quant.assemble_paths(cv.n_splits, cv.n_test_splits, pieces)[0]
    return np.arange(n_rows), first, CPCVResult(sharpes, quant.path_distribution(sharpes))


def _real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _bad(field: str, message: str) -> InvalidArgument:
    return InvalidArgument(
        f"invalid backtest: {field} {message}",
        reason="INVALID_BACKTEST",
        metadata={"field": field},
    )
