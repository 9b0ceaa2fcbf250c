"""What picking the best of a study's trials (or a leaderboard's rows) is worth: the PBO by CSCV
over their stitched out-of-sample returns, every row's Sharpe, PSR and deflated Sharpe ratio
given the number of rows and the variance of their Sharpe ratios (mlmesh_common.quant,
docs/statistics.md). When the rows cannot support it, the report says why instead."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from mlmesh_common import quant

RANK_BY = ("metric", "dsr")
N_BLOCKS = 16


@dataclass(frozen=True)
class Selection:
    """Sharpe ratios annualized by periods_per_year; probabilities as they are. `reason` and
    `message` are set (and the numbers absent) when the statistics are undefined."""

    n_trials: int
    n_blocks: int = N_BLOCKS
    n_observations: int = 0
    # Row key -> annualized Sharpe, PSR(0) and DSR (PSR(SR0)).
    sharpe: dict = field(default_factory=dict)
    psr: dict = field(default_factory=dict)
    dsr: dict = field(default_factory=dict)
    sr0: float = math.nan  # annualized
    sharpe_variance: float = math.nan  # per period
    pbo: quant.PBOResult | None = None
    reason: str = ""
    message: str = ""

    @property
    def ok(self) -> bool:
        return not self.reason

    def metrics(self, best) -> dict[str, float]:
        """What the MLflow parent run logs: the PBO and the best row's statistics."""
        if not self.ok:
            return {}
        values = {
            "pbo": self.pbo.pbo,
            "prob_oos_loss": self.pbo.prob_oos_loss,
            "degradation_slope": self.pbo.degradation.slope,
            "degradation_intercept": self.pbo.degradation.intercept,
            "degradation_r2": self.pbo.degradation.r2,
            "sr0": self.sr0,
            "n_trials_pbo": float(self.n_trials),
        }
        if best in self.sharpe:
            values |= {
                "best_oos_sharpe": self.sharpe[best],
                "best_oos_psr": self.psr[best],
                "best_dsr": self.dsr[best],
            }
        return {k: float(v) for k, v in values.items() if math.isfinite(v)}


def select(keys: Sequence, series: Sequence[Sequence[float]], periods_per_year: float) -> Selection:
    """The report over the rows `keys` whose stitched out-of-sample P&L series are `series`
    (one per key, the same bars for all)."""
    n = len(keys)
    if n < 2:
        return Selection(
            n,
            reason="TOO_FEW_TRIALS",
            message=f"{n} trial(s) with an out-of-sample series; the PBO and DSR need at least 2",
        )
    lengths = {len(s) for s in series}
    if len(lengths) != 1:
        return Selection(
            n,
            reason="UNALIGNED_SERIES",
            message="the trials' out-of-sample series cover different bars",
        )
    matrix = np.column_stack([np.asarray(s, dtype=float) for s in series])
    try:
        report = quant.selection_bias(matrix, N_BLOCKS)
        dsr = np.asarray(quant.probabilistic_sharpe(matrix, report.sr0), dtype=float)
    except quant.StatisticsError as exc:
        return Selection(n, n_observations=matrix.shape[0], reason=exc.reason, message=exc.message)
    root = math.sqrt(periods_per_year)
    return Selection(
        n_trials=n,
        n_observations=report.n_observations,
        sharpe={k: float(s) * root for k, s in zip(keys, report.sharpe, strict=True)},
        psr={k: float(p) for k, p in zip(keys, report.psr, strict=True)},
        dsr={k: float(d) for k, d in zip(keys, np.atleast_1d(dsr), strict=True)},
        sr0=report.sr0 * root,
        sharpe_variance=report.sharpe_variance,
        pbo=report.pbo,
    )
