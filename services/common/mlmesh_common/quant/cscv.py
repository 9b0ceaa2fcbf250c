"""The probability of backtest overfitting by combinatorially symmetric cross-validation (CSCV;
Bailey, Borwein, Lopez de Prado and Zhu), vectorized over the C(S, S/2) splits, and the
selection-bias report of a set of trials (their Sharpe, PSR, the best one's DSR and the PBO)."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from mlmesh.quant.v1 import statistics_pb2
from mlmesh_common.quant.errors import StatisticsError
from mlmesh_common.quant.sharpe import (
    as_returns,
    check_variance,
    expected_max_sharpe,
    probabilistic_sharpe,
    sharpe,
)

# C(20, 10) = 184,756 splits; the paper's S = 16 gives 12,870. More would take hours.
MAX_BLOCKS = 20
# Combinations per vectorized chunk: bounds memory to a few (chunk, trials) float arrays.
_CHUNK_CELLS = 1_000_000


@dataclass(frozen=True)
class Degradation:
    """Least squares of the selected trial's out-of-sample Sharpe on its in-sample Sharpe."""

    slope: float
    intercept: float
    r2: float

    def to_proto(self) -> statistics_pb2.Degradation:
        return statistics_pb2.Degradation(slope=self.slope, intercept=self.intercept, r2=self.r2)


@dataclass(frozen=True)
class PBOResult:
    pbo: float
    # Fraction of splits where the in-sample best has a negative out-of-sample Sharpe.
    prob_oos_loss: float
    degradation: Degradation
    # One logit per split, splits in itertools.combinations(range(S), S // 2) order (the
    # in-sample blocks); so are the two per-period Sharpe arrays of the selected trial.
    logits: np.ndarray
    is_sharpe: np.ndarray
    oos_sharpe: np.ndarray
    n_blocks: int
    # Rows used: the first T mod S rows are dropped.
    n_observations: int

    def proto_fields(self) -> dict[str, Any]:
        """The fields every answer carrying a PBO has alike (the experiments service's
        overfitting answer, the training service's PBO message), as proto field values."""
        return {
            "pbo": self.pbo,
            "prob_oos_loss": self.prob_oos_loss,
            "degradation": self.degradation.to_proto(),
            "logits": [float(v) for v in self.logits],
        }


def check_blocks(n_blocks: int, n_obs: int) -> None:
    if n_blocks < 2 or n_blocks % 2 or n_blocks > MAX_BLOCKS:
        raise StatisticsError(
            f"n_blocks must be even, from 2 to {MAX_BLOCKS}, got {n_blocks}",
            reason="INVALID_N_BLOCKS",
        )
    if n_obs < 2 * n_blocks:
        raise StatisticsError(
            f"{n_obs} observations cannot fill {n_blocks} blocks of at least 2 rows; "
            f"at least {2 * n_blocks} are needed",
            reason="TOO_FEW_OBSERVATIONS",
        )


def in_sample_blocks(n_blocks: int) -> np.ndarray:
    """(C(S, S/2), S) booleans: row c marks the in-sample blocks of split c."""
    combos = list(itertools.combinations(range(n_blocks), n_blocks // 2))
    mask = np.zeros((len(combos), n_blocks), dtype=bool)
    mask[np.repeat(np.arange(len(combos)), n_blocks // 2), np.ravel(combos)] = True
    return mask


def pbo_cscv(returns: object, n_blocks: int = 16) -> PBOResult:
    """PBO of selecting the highest per-period Sharpe among the columns of `returns` (one row per
    period, one column per trial), over every split of S blocks into two halves."""
    matrix = as_returns(returns)
    if matrix.ndim != 2 or matrix.shape[1] < 2:
        raise StatisticsError(
            "CSCV needs a (periods, trials) matrix of at least 2 trials", reason="TOO_FEW_TRIALS"
        )
    check_blocks(n_blocks, matrix.shape[0])
    n_trials = matrix.shape[1]
    rows = matrix[matrix.shape[0] % n_blocks :]
    size = rows.shape[0] // n_blocks
    blocks = rows.reshape(n_blocks, size, n_trials)
    _check_half_variance(blocks)
    # Sums of values centred on each trial's mean: the variance from sums stays accurate, and
    # the Sharpe adds the mean back.
    centre = rows.mean(axis=0)
    centred = blocks - centre
    block_sum, block_sq = centred.sum(axis=1), (centred**2).sum(axis=1)
    half = n_blocks // 2 * size
    mask = in_sample_blocks(n_blocks)
    chunk = max(1, _CHUNK_CELLS // n_trials)
    logits, is_best, oos_best = [], [], []
    for start in range(0, len(mask), chunk):
        in_sample = mask[start : start + chunk].astype(float)
        is_sr = _half_sharpe(in_sample @ block_sum, in_sample @ block_sq, half, centre)
        oos_sr = _half_sharpe((1 - in_sample) @ block_sum, (1 - in_sample) @ block_sq, half, centre)
        best = np.argmax(is_sr, axis=1)  # the first maximum on ties
        take = np.arange(len(best))
        chosen = oos_sr[take, best][:, None]
        # Average rank among the out-of-sample Sharpe ratios, 1 = worst.
        rank = (oos_sr < chosen).sum(axis=1) + ((oos_sr == chosen).sum(axis=1) + 1) / 2
        omega = rank / (n_trials + 1)
        logits.append(np.log(omega / (1 - omega)))
        is_best.append(is_sr[take, best])
        oos_best.append(chosen[:, 0])
    logit = np.concatenate(logits)
    is_sharpe, oos_sharpe = np.concatenate(is_best), np.concatenate(oos_best)
    return PBOResult(
        pbo=float(np.mean(logit <= 0)),
        prob_oos_loss=float(np.mean(oos_sharpe < 0)),
        degradation=_degradation(is_sharpe, oos_sharpe),
        logits=logit,
        is_sharpe=is_sharpe,
        oos_sharpe=oos_sharpe,
        n_blocks=n_blocks,
        n_observations=rows.shape[0],
    )


def _half_sharpe(total: np.ndarray, squares: np.ndarray, n: int, centre: np.ndarray) -> np.ndarray:
    mean = total / n
    variance = np.maximum(squares - n * mean**2, 0.0) / (n - 1)
    return (mean + centre) / np.sqrt(variance)


def _check_half_variance(blocks: np.ndarray) -> None:
    """A half in which a trial's rows are all equal has no Sharpe ratio: only trials with a
    constant block can have one, so only those are checked split by split."""
    low, high = blocks.min(axis=1), blocks.max(axis=1)
    constant = low == high
    n_blocks = blocks.shape[0]
    if not constant.any():
        return
    mask = in_sample_blocks(n_blocks)
    for trial in np.flatnonzero(constant.any(axis=0)):
        for side, chosen in (("in-sample", mask), ("out-of-sample", ~mask)):
            lows = np.where(chosen, low[:, trial], np.inf).min(axis=1)
            highs = np.where(chosen, high[:, trial], -np.inf).max(axis=1)
            flat = np.flatnonzero(lows == highs)
            if flat.size:
                picked = np.flatnonzero(chosen[flat[0]]).tolist()
                raise StatisticsError(
                    f"series {trial} has zero variance on the {side} half made of blocks "
                    f"{picked} (of {n_blocks}): its Sharpe ratio is undefined there",
                    reason="ZERO_VARIANCE",
                    column=int(trial),
                )


def _degradation(is_sharpe: np.ndarray, oos_sharpe: np.ndarray) -> Degradation:
    if np.ptp(is_sharpe) == 0:
        raise StatisticsError(
            "the selected trial's in-sample Sharpe is the same on every split: no degradation "
            "regression",
            reason="DEGENERATE_REGRESSION",
        )
    fit = stats.linregress(is_sharpe, oos_sharpe)
    return Degradation(float(fit.slope), float(fit.intercept), float(fit.rvalue**2))


@dataclass(frozen=True)
class SelectionBias:
    """What choosing the best of N trials is worth. Sharpe ratios per period over every row."""

    n_trials: int
    n_observations: int
    sharpe: np.ndarray
    psr: np.ndarray
    # Index of the highest full-sample Sharpe (the first on ties).
    best: int
    # Variance (ddof=1) of the trials' Sharpe ratios, SR0 and the best trial's PSR(SR0).
    sharpe_variance: float
    sr0: float
    dsr: float
    pbo: PBOResult


def selection_bias(returns: object, n_blocks: int = 16) -> SelectionBias:
    """Every trial's Sharpe and PSR(0), the best one's DSR and the PBO of picking it, from a
    (periods, trials) matrix of aligned per-period returns."""
    matrix = as_returns(returns)
    if matrix.ndim != 2 or matrix.shape[1] < 2:
        raise StatisticsError(
            "selection bias needs a (periods, trials) matrix of at least 2 trials",
            reason="TOO_FEW_TRIALS",
        )
    check_blocks(n_blocks, matrix.shape[0])
    check_variance(matrix)
    ratios = np.asarray(sharpe(matrix))
    best = int(np.argmax(ratios))
    variance = float(np.var(ratios, ddof=1))
    sr0 = expected_max_sharpe(matrix.shape[1], variance)
    return SelectionBias(
        n_trials=matrix.shape[1],
        n_observations=matrix.shape[0],
        sharpe=ratios,
        psr=np.asarray(probabilistic_sharpe(matrix)),
        best=best,
        sharpe_variance=variance,
        sr0=sr0,
        dsr=float(probabilistic_sharpe(matrix[:, best], sr0)),
        pbo=pbo_cscv(matrix, n_blocks),
    )


def n_splits(n_blocks: int) -> int:
    return math.comb(n_blocks, n_blocks // 2)
