"""A calibrated synthetic ensemble: members and "observation" drawn from the same distribution.

At every pixel the observation and the M members are independent draws from N(mu, sigma^2), mu and sigma
varying from pixel to pixel, so the observation is exchangeable with the members. What follows is worked
out from that alone, not from ``probscores``:

- Its rank among the members (0..M) is uniform: with n pixels each of the M + 1 counts is
  Binomial(n, 1 / (M + 1)). Pearson's X^2 = sum (c - n / (M + 1))^2 / (n / (M + 1)) then follows chi^2 with
  M degrees of freedom, whose 0.999 quantile is 29.588 for M = 10 (table value; scipy
  ``chi2.ppf(0.999, 10)``). Each count also stays within 4.5 binomial standard deviations of n / (M + 1)
  (two-sided, union over 11 ranks: probability of failing below 1e-4).
- E[var_ddof1(members)] = sigma^2 and E[(mean - obs)^2] = sigma^2 (1 + 1 / M), so SPREAD =
  sqrt((M + 1) / M * mean var) and RMSE_MEAN estimate the same quantity: SPREAD_SKILL -> 1. With n = 20,000
  pixels its sampling standard deviation is below 0.01; the test allows 0.03.
- With one sigma everywhere, the expected CRPS of an M-member ensemble is
  E|X - Y| - (M - 1) / (2 M) E|X - X'| = sigma (M + 1) / (M sqrt(pi)) (X, X', Y iid normal,
  E|X - Y| = 2 sigma / sqrt(pi)): 0.62060 for sigma = 1, M = 10.

Members squeezed to half their spread around their own mean are the negative control: U-shaped ranks, far
beyond the bound, and SPREAD_SKILL = 0.5 (the mean, and so RMSE_MEAN, is unchanged; the spread halves).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from nowcast.verification import probscores as ps

M, LEADS, SHAPE = 10, 2, (100, 200)
N = SHAPE[0] * SHAPE[1]
CHI2_999_10 = 29.588
"""0.999 quantile of chi^2 with 10 degrees of freedom."""


def _draw(seed: int, sigma: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """Members (M, LEADS, *SHAPE) and observation (LEADS, *SHAPE), iid N(mu, sigma^2) given the pixel."""
    rng = np.random.default_rng(seed)
    mu = rng.gamma(0.8, 3.0, (LEADS, *SHAPE))
    members = mu + sigma * rng.standard_normal((M, LEADS, *SHAPE))
    observed = mu + sigma * rng.standard_normal((LEADS, *SHAPE))
    return members, observed


def _scores(members: np.ndarray, observed: np.ndarray) -> dict[str, np.ndarray]:
    s = ps.init_probscores(LEADS, [1.0], M, rank_min=None)
    ps.accumulate(s, members, observed)
    return ps.compute(s)


@pytest.fixture(scope="module")
def calibrated() -> dict[str, np.ndarray]:
    sigma = np.random.default_rng(99).uniform(0.3, 3.0, SHAPE)  # heteroscedastic: pooled scores must cope
    return _scores(*_draw(1, sigma))


def _chi2(counts: np.ndarray) -> float:
    expected = counts.sum() / counts.size
    return float(((counts - expected) ** 2 / expected).sum())


def test_rank_histogram_is_flat(calibrated) -> None:
    p = 1.0 / (M + 1)
    bound = 4.5 * math.sqrt(N * p * (1 - p))
    for lead in range(LEADS):
        counts = calibrated["RANK"][lead]
        assert counts.sum() == pytest.approx(N)  # continuous draws: no ties, every pixel counted once
        assert _chi2(counts) < CHI2_999_10
        assert np.abs(counts - N * p).max() < bound


def test_spread_skill_is_one(calibrated) -> None:
    np.testing.assert_allclose(calibrated["SPREAD_SKILL"], 1.0, atol=0.03)


def test_crps_of_a_calibrated_normal_ensemble() -> None:
    crps = _scores(*_draw(2, 1.0))["CRPS"]
    np.testing.assert_allclose(crps, (M + 1) / (M * math.sqrt(math.pi)), rtol=0.02)  # 0.62060


def test_under_dispersive_ensemble_is_caught() -> None:
    members, observed = _draw(3, 1.0)
    centre = members.mean(0)
    squeezed = centre + 0.5 * (members - centre)  # half the spread, the same mean
    s = _scores(squeezed, observed)
    np.testing.assert_allclose(s["SPREAD_SKILL"], 0.5, atol=0.015)
    for lead in range(LEADS):
        counts = s["RANK"][lead]
        assert _chi2(counts) > 100 * CHI2_999_10
        assert min(counts[0], counts[-1]) > 2 * counts[M // 2]  # U-shaped
