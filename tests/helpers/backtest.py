"""The backtest of a position series recomputed bar by bar with plain loops (not
mlmesh_common.quant), as docs/statistics.md defines it: what the training tests compare to."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats


def series_stats(held: np.ndarray, r: np.ndarray, cost_bps: float, ppy: float) -> dict:
    """Bar by bar: P&L, equity, drawdown; then the statistics of docs/statistics.md."""
    pnl, previous = [], 0.0
    for position, ret in zip(held, r, strict=True):
        pnl.append(position * ret - cost_bps / 10_000 * abs(position - previous))
        previous = position
    pnl = np.array(pnl)
    equity, peak, drawdown = [], 1.0, 0.0
    level = 1.0
    for p in pnl:
        level *= 1 + p
        peak = max(peak, level)
        drawdown = max(drawdown, 1 - level / peak)
        equity.append(level)
    n = len(pnl)
    mean, std = pnl.mean(), pnl.std(ddof=1)
    downside = math.sqrt(sum(min(p, 0) ** 2 for p in pnl) / n)
    total = equity[-1] - 1
    annual = (1 + total) ** (ppy / n) - 1
    active = held != 0
    sr = mean / std
    skew, kurt = stats.skew(pnl), stats.kurtosis(pnl, fisher=False)
    psr = stats.norm.cdf(sr * math.sqrt(n - 1) / math.sqrt(1 - skew * sr + (kurt - 1) / 4 * sr**2))
    return {
        "sharpe": sr * math.sqrt(ppy),
        "sortino": mean / downside * math.sqrt(ppy),
        "max_drawdown": drawdown,
        "calmar": annual / drawdown,
        "total_return": total,
        "hit_rate": float(np.mean(held[active] * r[active] > 0)),
        "turnover": float(np.mean(np.abs(np.diff(held, prepend=0.0)))),
        "n_bars": n,
        "psr": psr,
        "pnl": pnl,
        "equity": np.array(equity),
    }
