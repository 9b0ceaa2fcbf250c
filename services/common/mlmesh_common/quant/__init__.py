"""Strategy statistics, numpy and scipy only: the backtest of predictions, Sharpe ratios and their
selection-bias corrections (PSR, DSR), PBO by CSCV and CPCV backtest paths. docs/statistics.md
states the conventions they follow."""

from mlmesh_common.quant.backtest import (
    POSITION_MODES,
    BacktestStats,
    WalkForward,
    backtest_stats,
    equity_curve,
    periods_per_year,
    pnl,
    positions,
    prediction_scale,
    walk_forward,
)
from mlmesh_common.quant.cpcv import (
    PathDistribution,
    assemble_paths,
    cpcv_paths,
    cpcv_splits,
    n_paths,
    path_distribution,
    path_sharpes,
)
from mlmesh_common.quant.cscv import (
    MAX_BLOCKS,
    Degradation,
    PBOResult,
    SelectionBias,
    in_sample_blocks,
    n_splits,
    pbo_cscv,
    selection_bias,
)
from mlmesh_common.quant.errors import StatisticsError
from mlmesh_common.quant.sharpe import (
    annualize,
    deflated_sharpe,
    expected_max_sharpe,
    moments,
    probabilistic_sharpe,
    psr_from_moments,
    sharpe,
)

__all__ = [
    "MAX_BLOCKS",
    "POSITION_MODES",
    "BacktestStats",
    "Degradation",
    "PBOResult",
    "PathDistribution",
    "SelectionBias",
    "StatisticsError",
    "WalkForward",
    "annualize",
    "assemble_paths",
    "backtest_stats",
    "cpcv_paths",
    "cpcv_splits",
    "deflated_sharpe",
    "equity_curve",
    "expected_max_sharpe",
    "in_sample_blocks",
    "moments",
    "n_paths",
    "n_splits",
    "path_distribution",
    "path_sharpes",
    "pbo_cscv",
    "periods_per_year",
    "pnl",
    "positions",
    "prediction_scale",
    "probabilistic_sharpe",
    "psr_from_moments",
    "selection_bias",
    "sharpe",
    "walk_forward",
]
