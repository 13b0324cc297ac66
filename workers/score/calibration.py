"""Calibration of a score read as a probability of cancer.

A triage threshold only transfers between sites if the score means the same thing at both, so
evaluate shows how far predicted and observed cancer rates agree, not only the ranking (AUC).
Scores outside [0, 1] are not probabilities; calibration is then reported as not applicable
rather than forced.

- Reliability curve: equal-count bins of the score (quantile bins, so each bin has data even
  when cancers are rare and scores are skewed); per bin the mean score, the observed cancer rate
  with a Wilson interval, and n.
- Brier score: mean squared difference between score and label; beside it the Brier score of
  always predicting the prevalence, the reference a useful score must beat.
- Calibration slope and intercept (Cox 1958; Van Calster et al. 2016): logistic regression of
  the label on logit(score). The slope comes from the two-parameter fit (1 = ideal; < 1 means
  scores too extreme); the intercept from the fit with the slope fixed at 1 ("calibration in
  the large", 0 = ideal). Fitted by Newton-Raphson: two parameters, a handful of iterations.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import NDArray

from workers.score.stats import wilson

Floats = NDArray[np.float64]
_EPS = 1e-6


@dataclass(frozen=True)
class ReliabilityBin:
    low: float
    high: float
    n: int
    mean_score: float
    observed: float
    observed_low: float
    observed_high: float


@dataclass(frozen=True)
class Calibration:
    applicable: bool
    reason: str
    bins: list[ReliabilityBin]
    brier: float
    brier_prevalence: float
    slope: float | None
    intercept: float | None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def reliability(scores: Floats, labels: NDArray[np.integer], n_bins: int) -> list[ReliabilityBin]:
    edges = np.unique(np.quantile(scores, np.linspace(0, 1, n_bins + 1)))
    if edges.size < 2:
        edges = np.array([scores.min(), scores.max()])
    which = np.clip(np.searchsorted(edges, scores, side="right") - 1, 0, edges.size - 2)
    out = []
    for b in range(edges.size - 1):
        m = which == b
        n = int(m.sum())
        if n == 0:
            continue
        k = int(labels[m].sum())
        lo, hi = wilson(k, n)
        out.append(ReliabilityBin(float(edges[b]), float(edges[b + 1]), n,
                                  float(scores[m].mean()), k / n, lo, hi))
    return out


def _logistic_fit(
    x: Floats, y: Floats, offset: Floats, with_slope: bool, iterations: int = 50
) -> Floats | None:
    """Maximum-likelihood (intercept[, slope]) of y ~ intercept + slope*x + offset."""
    design = np.column_stack([np.ones_like(x), x]) if with_slope else np.ones((x.size, 1))
    beta = np.zeros(design.shape[1])
    for _ in range(iterations):
        eta = design @ beta + offset
        p = 1.0 / (1.0 + np.exp(-eta))
        grad = design.T @ (y - p)
        hess = (design * (p * (1 - p))[:, None]).T @ design
        try:
            step = np.linalg.solve(hess, grad)
        except np.linalg.LinAlgError:
            return None
        beta = beta + step
        if np.max(np.abs(step)) < 1e-10:
            return beta
    return None  # did not converge (e.g. perfect separation): say so, do not guess


def log_likelihood(beta: Floats, x: Floats, y: Floats, offset: Floats) -> float:
    """The objective ``_logistic_fit`` maximises (exposed so tests can check the optimum)."""
    eta = beta[0] + (beta[1] * x if beta.size > 1 else 0.0) + offset
    return float(np.sum(y * eta - np.logaddexp(0.0, eta)))


def logit(scores: Floats) -> Floats:
    s = np.clip(scores, _EPS, 1 - _EPS)
    return np.asarray(np.log(s / (1 - s)), dtype=np.float64)


def calibration(scores: Floats, labels: NDArray[np.integer], n_bins: int = 10) -> Calibration:
    if scores.size == 0 or scores.min() < 0 or scores.max() > 1:
        return Calibration(False, "scores are not in [0, 1], so they are not probabilities",
                           [], float("nan"), float("nan"), None, None)
    y = labels.astype(np.float64)
    prevalence = float(y.mean())
    brier = float(np.mean((scores - y) ** 2))
    slope = intercept = None
    if 0 < prevalence < 1:
        x = logit(scores)
        two = _logistic_fit(x, y, np.zeros_like(x), with_slope=True)
        one = _logistic_fit(x, y, x, with_slope=False)
        slope = None if two is None else float(two[1])
        intercept = None if one is None else float(one[0])
    return Calibration(True, "", reliability(scores, labels, n_bins), brier,
                       prevalence * (1 - prevalence), slope, intercept)
