"""Calibration: reliability bins, Brier score, slope and intercept against known truths."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import optimize

from workers.score.calibration import (
    _logistic_fit,
    calibration,
    log_likelihood,
    logit,
    reliability,
)


def calibrated(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    p = 1 / (1 + np.exp(-rng.normal(-2.0, 1.2, n)))
    return p, (rng.random(n) < p).astype(np.int8)


def test_a_calibrated_score_has_slope_one_and_intercept_zero() -> None:
    p, y = calibrated(np.random.default_rng(1), 40_000)
    cal = calibration(p, y)
    assert cal.applicable
    assert cal.slope == pytest.approx(1.0, abs=0.06)
    assert cal.intercept == pytest.approx(0.0, abs=0.05)
    for b in cal.bins:  # each bin's observed rate is near its mean score
        assert b.observed_low - 0.01 <= b.mean_score <= b.observed_high + 0.01


def test_overconfident_and_shifted_scores_are_detected() -> None:
    p, y = calibrated(np.random.default_rng(2), 40_000)
    extreme = 1 / (1 + np.exp(-2 * logit(p)))  # logit doubled: slope 0.5 recovers the truth
    assert calibration(extreme, y).slope == pytest.approx(0.5, abs=0.04)
    high = 1 / (1 + np.exp(-(logit(p) + 1.0)))  # everything one logit too high
    cal = calibration(high, y)
    assert cal.intercept == pytest.approx(-1.0, abs=0.06)
    assert cal.slope == pytest.approx(1.0, abs=0.06)


def test_fit_is_the_maximum_likelihood_found_by_a_general_optimiser() -> None:
    rng = np.random.default_rng(3)
    p, y = calibrated(rng, 3000)
    x = logit(np.clip(p + rng.normal(0, 0.05, p.size), 0.001, 0.999))
    yf = y.astype(np.float64)
    beta = _logistic_fit(x, yf, np.zeros_like(x), with_slope=True)
    assert beta is not None
    ref = optimize.minimize(lambda b: -log_likelihood(b, x, yf, np.zeros_like(x)), [0.0, 1.0],
                            method="Nelder-Mead", options={"xatol": 1e-8, "fatol": 1e-10})
    assert beta == pytest.approx(ref.x, abs=1e-4)


def test_brier_and_bins_by_hand() -> None:
    s = np.array([0.1, 0.2, 0.8, 0.9])
    y = np.array([0, 1, 1, 1], dtype=np.int8)
    cal = calibration(s, y, n_bins=2)
    assert cal.brier == pytest.approx((0.01 + 0.64 + 0.04 + 0.01) / 4)
    assert cal.brier_prevalence == pytest.approx(0.75 * 0.25)
    assert [(b.n, b.observed) for b in cal.bins] == [(2, 0.5), (2, 1.0)]
    assert sum(b.n for b in reliability(s, y, 10)) == 4


def test_separated_data_reports_no_slope_rather_than_a_guess() -> None:
    s = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    y = np.array([0, 0, 0, 1, 1, 1], dtype=np.int8)
    assert calibration(s, y).slope is None


def test_scores_outside_zero_one_are_not_probabilities() -> None:
    cal = calibration(np.array([-1.0, 2.0, 0.5]), np.array([0, 1, 1], dtype=np.int8))
    assert not cal.applicable and "not in [0, 1]" in cal.reason and cal.slope is None
