"""PBO by CSCV: the vectorized implementation against a literal loop over the splits, and the
properties the paper proves (noise: PBO about 1/2; a real edge: PBO about 0)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from mlmesh_common import quant
from mlmesh_common.quant import cscv


def loop_cscv(returns: np.ndarray, n_blocks: int) -> tuple[list[float], list[float], list[float]]:
    """CSCV written out as Bailey et al. describe it, one split at a time."""
    rows = returns[len(returns) % n_blocks :]
    blocks = np.split(rows, n_blocks)
    n_trials = returns.shape[1]
    logits, is_best, oos_best = [], [], []
    for chosen in itertools.combinations(range(n_blocks), n_blocks // 2):
        train = np.concatenate([blocks[b] for b in chosen])
        test = np.concatenate([blocks[b] for b in range(n_blocks) if b not in chosen])
        is_sr = [np.mean(train[:, n]) / np.std(train[:, n], ddof=1) for n in range(n_trials)]
        oos_sr = [np.mean(test[:, n]) / np.std(test[:, n], ddof=1) for n in range(n_trials)]
        best = is_sr.index(max(is_sr))
        omega = stats.rankdata(oos_sr, method="average")[best] / (n_trials + 1)
        logits.append(math.log(omega / (1 - omega)))
        is_best.append(is_sr[best])
        oos_best.append(oos_sr[best])
    return logits, is_best, oos_best


@pytest.mark.parametrize(
    ("n_obs", "n_trials", "n_blocks"), [(203, 7, 8), (160, 10, 10), (37, 3, 2)]
)
def test_vectorized_cscv_matches_the_loop(n_obs, n_trials, n_blocks):
    rng = np.random.default_rng(n_obs)
    returns = rng.normal(0.0002, 0.01, size=(n_obs, n_trials)) + rng.normal(
        0, 0.004, size=(n_obs, 1)
    )
    result = quant.pbo_cscv(returns, n_blocks)
    logits, is_best, oos_best = loop_cscv(returns, n_blocks)
    assert len(result.logits) == math.comb(n_blocks, n_blocks // 2)
    assert np.allclose(result.logits, logits, rtol=0, atol=1e-12)
    assert np.allclose(result.is_sharpe, is_best, rtol=1e-10, atol=1e-14)
    assert np.allclose(result.oos_sharpe, oos_best, rtol=1e-10, atol=1e-14)
    assert result.pbo == np.mean(np.array(logits) <= 0)
    assert result.prob_oos_loss == np.mean(np.array(oos_best) < 0)
    fit = stats.linregress(is_best, oos_best)
    assert result.degradation.slope == pytest.approx(fit.slope, rel=1e-9)
    assert result.degradation.intercept == pytest.approx(fit.intercept, rel=1e-9, abs=1e-14)
    assert result.degradation.r2 == pytest.approx(fit.rvalue**2, rel=1e-9)
    assert result.n_observations == n_obs - n_obs % n_blocks


def test_ties_take_the_first_in_sample_best_and_average_out_of_sample_ranks():
    rng = np.random.default_rng(3)
    base = rng.normal(0, 0.01, size=(40, 3))
    returns = np.column_stack([base, base[:, 0]])  # trial 3 duplicates trial 0
    result = quant.pbo_cscv(returns, 4)
    logits, _, _ = loop_cscv(returns, 4)
    assert np.allclose(result.logits, logits, atol=1e-12)


def test_noise_strategies_have_a_pbo_near_one_half():
    # With no skill the in-sample best's out-of-sample rank is uniform: E[PBO] = 1/2 for an even
    # number of trials. Over 200 seeds the mean's standard error is about 0.02.
    pbos = [
        quant.pbo_cscv(np.random.default_rng(seed).normal(0, 0.01, (400, 10)), 8).pbo
        for seed in range(200)
    ]
    assert abs(np.mean(pbos) - 0.5) < 0.07


def test_a_strategy_with_a_true_drift_has_a_pbo_near_zero():
    rng = np.random.default_rng(11)
    returns = rng.normal(0, 0.01, (1000, 20))
    returns[:, 13] += 0.003  # an annualized Sharpe near 4.8 against noise
    result = quant.pbo_cscv(returns, 16)
    assert result.pbo < 0.02
    assert result.prob_oos_loss < 0.02


def test_selection_bias_report():
    rng = np.random.default_rng(5)
    returns = rng.normal(0.0003, 0.01, (600, 12))
    report = quant.selection_bias(returns, 8)
    ratios = returns.mean(0) / returns.std(0, ddof=1)
    assert np.allclose(report.sharpe, ratios, rtol=1e-12)
    assert report.best == int(np.argmax(ratios))
    variance = float(np.var(ratios, ddof=1))
    assert report.sharpe_variance == pytest.approx(variance, rel=1e-12)
    sr0 = quant.expected_max_sharpe(12, variance)
    best = returns[:, report.best]
    skew, kurtosis = stats.skew(best), stats.kurtosis(best, fisher=False)
    sr = ratios[report.best]
    z = (sr - sr0) * math.sqrt(599) / math.sqrt(1 - skew * sr + (kurtosis - 1) / 4 * sr**2)
    assert report.dsr == pytest.approx(stats.norm.cdf(z), abs=1e-12)
    assert report.pbo.pbo == quant.pbo_cscv(returns, 8).pbo


@pytest.mark.parametrize(
    ("shape", "n_blocks", "reason"),
    [
        ((100, 4), 7, "INVALID_N_BLOCKS"),
        ((100, 4), 0, "INVALID_N_BLOCKS"),
        ((100, 4), 22, "INVALID_N_BLOCKS"),
        ((31, 4), 16, "TOO_FEW_OBSERVATIONS"),
        ((100, 1), 4, "TOO_FEW_TRIALS"),
    ],
)
def test_invalid_inputs(shape, n_blocks, reason):
    returns = np.random.default_rng(0).normal(size=shape)
    with pytest.raises(quant.StatisticsError) as error:
        quant.pbo_cscv(returns, n_blocks)
    assert error.value.reason == reason


def test_a_flat_half_is_a_zero_variance_error():
    rng = np.random.default_rng(1)
    returns = rng.normal(0, 0.01, (80, 3))
    returns[:40, 2] = 0.0  # trial 2 never trades in the first half: blocks 0-3 of 8
    with pytest.raises(
        quant.StatisticsError, match=r"series 2 .*in-sample half.*\[0, 1, 2, 3\]"
    ) as error:
        quant.pbo_cscv(returns, 8)
    assert error.value.reason == "ZERO_VARIANCE" and error.value.column == 2
    returns[:20, 2] = rng.normal(0, 0.01, 20)  # flat in two blocks only: every half varies
    assert 0 <= quant.pbo_cscv(returns, 8).pbo <= 1


def test_chunks_of_splits_give_the_same_answer(monkeypatch):
    returns = np.random.default_rng(6).normal(0, 0.01, (120, 9))
    whole = quant.pbo_cscv(returns, 8)
    monkeypatch.setattr(cscv, "_CHUNK_CELLS", 9 * 7)  # 7 splits per chunk: 70 = 10 chunks
    chunked = quant.pbo_cscv(returns, 8)
    assert np.array_equal(chunked.logits, whole.logits)
    assert np.allclose(chunked.oos_sharpe, whole.oos_sharpe, rtol=1e-13, atol=0)
    assert chunked.degradation.slope == pytest.approx(whole.degradation.slope, rel=1e-12)
