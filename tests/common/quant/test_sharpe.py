"""Sharpe, PSR, SR0 and DSR against the published examples, recomputed here by hand with scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from mlmesh_common import quant


def hand_psr(sr: float, t: int, skew: float, kurtosis: float, sr_star: float = 0.0) -> float:
    denominator = math.sqrt(1 - skew * sr + (kurtosis - 1) / 4 * sr**2)
    return float(stats.norm.cdf((sr - sr_star) * math.sqrt(t - 1) / denominator))


def test_psr_example_of_the_sharpe_ratio_efficient_frontier():
    # Bailey and Lopez de Prado (2012): monthly SR 1.585 / sqrt(12), 24 months, skew -2.448,
    # kurtosis 10.164 -> PSR(0) = 0.9132.
    args = (1.585 / math.sqrt(12), 24, -2.448, 10.164)
    assert hand_psr(*args) == pytest.approx(0.9132, abs=1e-4)
    assert quant.psr_from_moments(*args) == pytest.approx(hand_psr(*args), abs=1e-12)


def test_dsr_example_of_the_deflated_sharpe_ratio_paper():
    # Bailey and Lopez de Prado (2014): annual SR 2.5, annual variance of the trials' SR 0.5,
    # N = 100 trials, T = 1250 days, skew -3, kurtosis 10, 250 days a year -> DSR 0.9004.
    days = 250
    variance = 0.5 / days
    gamma = 0.5772156649015329
    sr0 = math.sqrt(variance) * (
        (1 - gamma) * stats.norm.ppf(1 - 1 / 100) + gamma * stats.norm.ppf(1 - 1 / (100 * math.e))
    )
    dsr = hand_psr(2.5 / math.sqrt(days), 1250, -3, 10, sr0)
    assert dsr == pytest.approx(0.9004, abs=1e-4)
    assert quant.expected_max_sharpe(100, variance) == pytest.approx(sr0, rel=1e-12)
    assert quant.psr_from_moments(
        2.5 / math.sqrt(days), 1250, -3, 10, quant.expected_max_sharpe(100, variance)
    ) == pytest.approx(dsr, abs=1e-12)


def test_sharpe_and_psr_of_data_match_a_hand_computation():
    rng = np.random.default_rng(7)
    returns = rng.standard_t(4, size=(500, 3)) * 0.01 + 0.0008
    for column in returns.T:
        sr = column.mean() / column.std(ddof=1)
        skew = stats.skew(column)
        kurtosis = stats.kurtosis(column, fisher=False)
        assert quant.sharpe(column) == pytest.approx(sr, rel=1e-12)
        assert quant.probabilistic_sharpe(column, 0.01) == pytest.approx(
            hand_psr(sr, 500, skew, kurtosis, 0.01), abs=1e-12
        )
    assert np.allclose(quant.sharpe(returns), returns.mean(0) / returns.std(0, ddof=1))
    ratios = returns.mean(0) / returns.std(0, ddof=1)
    best = int(np.argmax(ratios))
    sr0 = quant.expected_max_sharpe(3, float(np.var(ratios, ddof=1)))
    assert quant.deflated_sharpe(returns[:, best], 3, float(np.var(ratios, ddof=1))) == (
        pytest.approx(quant.probabilistic_sharpe(returns[:, best], sr0), abs=1e-15)
    )


def test_annualize_is_for_display():
    assert quant.annualize(0.1, 252) == pytest.approx(0.1 * math.sqrt(252))


@pytest.mark.parametrize(
    ("call", "reason"),
    [
        (lambda: quant.sharpe([0.01]), "TOO_FEW_OBSERVATIONS"),
        (lambda: quant.sharpe([0.01, 0.01, 0.01]), "ZERO_VARIANCE"),
        (lambda: quant.sharpe([0.01, math.nan, 0.02]), "NON_FINITE_RETURNS"),
        (lambda: quant.probabilistic_sharpe(np.zeros((10, 2))), "ZERO_VARIANCE"),
        (lambda: quant.psr_from_moments(0.1, 1, 0, 3), "TOO_FEW_OBSERVATIONS"),
        (lambda: quant.expected_max_sharpe(1, 0.1), "TOO_FEW_TRIALS"),
        (lambda: quant.expected_max_sharpe(5, -0.1), "INVALID_VARIANCE"),
    ],
)
def test_undefined_statistics_are_clear_errors(call, reason):
    with pytest.raises(quant.StatisticsError) as error:
        call()
    assert error.value.reason == reason


def test_zero_variance_names_the_series():
    returns = np.column_stack([np.linspace(-1, 1, 10), np.full(10, 0.5)])
    with pytest.raises(quant.StatisticsError, match="series 1") as error:
        quant.sharpe(returns)
    assert error.value.column == 1
