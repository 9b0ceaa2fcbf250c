"""Sharpe ratios and their corrections for non-normal returns and for selection among trials:
the probabilistic Sharpe ratio (PSR), the expected maximum Sharpe of N trials (SR0) and the
deflated Sharpe ratio (DSR), as docs/statistics.md states them. Every Sharpe here is per period
(mean / std with ddof=1); `annualize` is for display only."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from mlmesh_common.quant.errors import StatisticsError


def as_returns(returns: object, *, min_rows: int = 2) -> np.ndarray:
    """A float array of finite returns, one row per period (1-D, or 2-D with one column per
    series), with at least `min_rows` rows."""
    array = np.asarray(returns, dtype=float)
    if array.ndim not in (1, 2):
        raise StatisticsError(
            f"returns must be a series or a (periods, series) matrix, got {array.ndim} dimensions",
            reason="INVALID_SHAPE",
        )
    if array.shape[0] < min_rows:
        raise StatisticsError(
            f"{array.shape[0]} observations; at least {min_rows} are needed",
            reason="TOO_FEW_OBSERVATIONS",
        )
    if not np.isfinite(array).all():
        raise StatisticsError("returns must be finite numbers", reason="NON_FINITE_RETURNS")
    return array


def check_variance(array: np.ndarray) -> None:
    """Zero variance (every value of a series equal) leaves the Sharpe ratio undefined."""
    constant = np.ptp(array, axis=0) == 0
    if np.any(constant):
        column = int(np.argmax(constant)) if array.ndim == 2 else None
        where = f"series {column} has" if column is not None else "the series has"
        raise StatisticsError(
            f"{where} zero variance: its Sharpe ratio is undefined",
            reason="ZERO_VARIANCE",
            column=column,
        )


def sharpe(returns: object) -> float | np.ndarray:
    """Per-period Sharpe ratio mean / std (ddof=1) of a series, or of each column."""
    array = as_returns(returns)
    check_variance(array)
    return array.mean(axis=0) / array.std(axis=0, ddof=1)


def annualize(per_period: float | np.ndarray, periods_per_year: float) -> float | np.ndarray:
    """The display figure: a per-period Sharpe ratio times sqrt(periods_per_year)."""
    return per_period * math.sqrt(periods_per_year)


def moments(returns: object) -> tuple[float | np.ndarray, float | np.ndarray]:
    """Sample skewness and raw (non-excess) kurtosis, both biased (scipy's defaults)."""
    array = as_returns(returns)
    return stats.skew(array, axis=0), stats.kurtosis(array, axis=0, fisher=False)


def psr_from_moments(
    sr: float | np.ndarray,
    n_obs: int,
    skew: float | np.ndarray,
    kurtosis: float | np.ndarray,
    sr_star: float | np.ndarray = 0.0,
) -> float | np.ndarray:
    """PSR(SR*) = Phi((SR - SR*) sqrt(T - 1) / sqrt(1 - skew SR + (kurtosis - 1) / 4 SR^2)),
    with SR and SR* per period and `kurtosis` raw (3 for a normal distribution)."""
    if n_obs < 2:
        raise StatisticsError(
            f"{n_obs} observations; the PSR needs at least 2", reason="TOO_FEW_OBSERVATIONS"
        )
    sr = np.asarray(sr, dtype=float)
    radicand = 1.0 - np.asarray(skew) * sr + (np.asarray(kurtosis) - 1.0) / 4.0 * sr**2
    if np.any(radicand <= 0):
        # Sample moments satisfy kurtosis >= 1 + skew^2, so this is (1 - skew SR / 2)^2 at worst:
        # zero only for a degenerate two-valued series.
        raise StatisticsError(
            "the PSR's standard error is zero for these moments", reason="DEGENERATE_MOMENTS"
        )
    z = (sr - sr_star) * math.sqrt(n_obs - 1) / np.sqrt(radicand)
    result = stats.norm.cdf(z)
    return float(result) if result.ndim == 0 else result


def probabilistic_sharpe(returns: object, sr_star: float = 0.0) -> float | np.ndarray:
    """PSR(SR*) of a series (or of each column) from its own Sharpe, skewness and kurtosis."""
    array = as_returns(returns)
    check_variance(array)
    skew, kurtosis = moments(array)
    return psr_from_moments(sharpe(array), array.shape[0], skew, kurtosis, sr_star)


def expected_max_sharpe(n_trials: int, variance: float) -> float:
    """SR0 = sqrt(V) ((1 - g) Phi^-1(1 - 1/N) + g Phi^-1(1 - 1/(N e))): the expected maximum
    per-period Sharpe of N trials whose true Sharpe is zero, V the variance (ddof=1) of the
    trials' per-period Sharpe ratios and g the Euler-Mascheroni constant."""
    if n_trials < 2:
        raise StatisticsError(
            f"{n_trials} trial(s); the expected maximum Sharpe needs at least 2",
            reason="TOO_FEW_TRIALS",
        )
    if not (math.isfinite(variance) and variance >= 0):
        raise StatisticsError(
            f"the variance of the trials' Sharpe ratios must be >= 0, got {variance}",
            reason="INVALID_VARIANCE",
        )
    gamma = np.euler_gamma
    quantiles = (1 - gamma) * stats.norm.ppf(1 - 1 / n_trials) + gamma * stats.norm.ppf(
        1 - 1 / (n_trials * math.e)
    )
    return math.sqrt(variance) * float(quantiles)


def deflated_sharpe(returns: object, n_trials: int, sharpe_variance: float) -> float:
    """DSR = PSR(SR0) of the selected series, SR0 from the number of trials and the variance of
    their per-period Sharpe ratios."""
    return probabilistic_sharpe(returns, expected_max_sharpe(n_trials, sharpe_variance))
