"""Discrimination statistics for a screening score, with honest uncertainty.

Why the bootstrap resamples women, not exams: a woman contributes several exams (rounds, or
per-breast rows), and her exams' scores are correlated; resampling rows would pretend they are
independent and give intervals that are too narrow. ``ClusterBootstrap`` draws women with
replacement and gives each row the number of times its woman was drawn as a weight, so every
statistic here is a *weighted* statistic evaluated for many weight vectors at once (numpy, in
chunks), never a Python loop over resamples. Scores are sorted once; the AUC of a resample is a
sum over tied score levels (ties count one half, as in the Mann-Whitney U).

Intervals are percentile intervals of the resampled statistic (2.5th and 97.5th percentiles).
Resamples in which a statistic is undefined (no cancer drawn, say) are left out and counted.
DeLong's method (``delong``) is the classical exam-level alternative for one or two AUCs; it
assumes independent exams, so evaluate reports it beside the clustered bootstrap, not instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import sparse
from scipy import stats as sps

Floats = NDArray[np.float64]
Z95 = float(sps.norm.ppf(0.975))  # 1.95996...


@dataclass(frozen=True)
class Interval:
    """A point estimate and its 95% interval; ``method`` says how it was computed."""

    estimate: float
    low: float
    high: float
    method: str

    def as_dict(self) -> dict[str, float | str]:
        return {"estimate": self.estimate, "low": self.low, "high": self.high,
                "method": self.method}


def auc(scores: Floats, labels: NDArray[np.integer]) -> float:
    """Mann-Whitney AUC = P(score of a cancer > score of a non-cancer) + P(tie) / 2."""
    pos = labels == 1
    n1, n0 = int(pos.sum()), int((~pos).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    ranks = sps.rankdata(scores)  # midranks for ties
    return float((ranks[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def roc_points(scores: Floats, labels: NDArray[np.integer]) -> tuple[Floats, Floats, Floats]:
    """FPR, TPR and threshold for "positive if score >= threshold", from (0,0) to (1,1)."""
    lv = _levels(scores, labels, np.arange(scores.size, dtype=np.intp), scores.size)
    ones = np.ones((scores.size, 1))
    tpr, fpr = _rates(lv.pos @ ones, lv.neg @ ones)
    return fpr[:, 0], tpr[:, 0], np.concatenate([[np.inf], lv.values[::-1]])


@dataclass(frozen=True)
class _Levels:
    """Distinct scores (ascending) and, per level and cluster, how many cancers and
    non-cancers there are: the only structure a resample's AUC needs."""

    values: Floats
    pos: sparse.csr_matrix  # (levels, clusters)
    neg: sparse.csr_matrix


def _levels(
    scores: Floats, labels: NDArray[np.integer], clusters: NDArray[np.intp], k: int
) -> _Levels:
    values, level = np.unique(scores, return_inverse=True)
    pos = labels == 1

    def count(mask: NDArray[np.bool_]) -> sparse.csr_matrix:
        return sparse.csr_matrix(
            (np.ones(int(mask.sum())), (level[mask], clusters[mask])), shape=(values.size, k))

    return _Levels(values, count(pos), count(~pos))


def _auc_cols(p: Floats, n: Floats) -> Floats:
    """AUC per column of per-level weighted cancer (p) and non-cancer (n) counts."""
    below = np.cumsum(n, axis=0) - n
    num = (p * (below + 0.5 * n)).sum(axis=0)
    den = p.sum(axis=0) * n.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan))


def _rates(p: Floats, n: Floats) -> tuple[Floats, Floats]:
    """TPR and FPR per column at thresholds from the highest level down, from (0, 0)."""
    zeros = np.zeros((1, p.shape[1]))
    tp = np.vstack([zeros, np.cumsum(p[::-1], axis=0)])
    fp = np.vstack([zeros, np.cumsum(n[::-1], axis=0)])
    with np.errstate(invalid="ignore", divide="ignore"):
        return tp / tp[-1:], fp / fp[-1:]


class ClusterBootstrap:
    """Resampling women with replacement, as draw counts per woman.

    A resample is a vector of how often each woman was drawn; a row's weight is its woman's
    count. Statistics aggregate their rows to women once (``by_cluster``) and then need only a
    matrix product per chunk of resamples. Resamples are drawn in chunks of a fixed size from
    one generator, so the same seed gives the same resamples to every statistic: paired
    quantities (two models' AUC difference, rule-out across thresholds) share them.
    """

    CHUNK = 32

    def __init__(self, clusters: NDArray[np.intp], n_boot: int, seed: int) -> None:
        if n_boot < 1:
            raise ValueError("n_boot must be positive")
        self.clusters = clusters
        self.n_clusters = int(clusters.max()) + 1 if clusters.size else 0
        self.n_boot = n_boot
        self.seed = seed
        self._member = sparse.csr_matrix(
            (np.ones(clusters.size), (clusters, np.arange(clusters.size))),
            shape=(self.n_clusters, clusters.size))

    def counts(self) -> Iterator[Floats]:
        """(b, clusters) draw counts, b <= CHUNK, n_boot rows in all."""
        rng = np.random.default_rng(self.seed)
        k = self.n_clusters
        done = 0
        while done < self.n_boot:
            b = min(self.CHUNK, self.n_boot - done)
            drawn = rng.integers(0, k, size=(b, k), dtype=np.int64)
            drawn += (np.arange(b, dtype=np.int64) * k)[:, None]
            yield np.bincount(drawn.ravel(), minlength=b * k).reshape(b, k).astype(np.float64)
            done += b

    def by_cluster(self, values: Floats) -> Floats:
        """Per-cluster sums of per-row values ((rows,) or (rows, m))."""
        return np.asarray(self._member @ values)

    @staticmethod
    def total(counts: Floats, per_cluster: Floats) -> Floats:
        """Resampled totals: counts (b, k) times per-cluster sums (k,) or (k, m).

        einsum's own loop, not BLAS: on a shared machine a multi-threaded BLAS spin-waits and
        was 25x slower for these small products (0.1 s vs 0.004 s for 32 x 8000 x 33)."""
        return np.einsum("bk,k...->b...", counts, per_cluster)

    def run(self, statistic: Callable[[Floats], Floats]) -> Floats:
        """``statistic`` maps a (b, clusters) count matrix to (b,) or (b, m) values."""
        return np.concatenate([statistic(c) for c in self.counts()], axis=0)


def percentile_interval(estimate: float, samples: Floats, method: str) -> Interval:
    ok = samples[np.isfinite(samples)]
    if ok.size == 0:
        return Interval(estimate, float("nan"), float("nan"), method)
    lo, hi = np.percentile(ok, [2.5, 97.5])
    dropped = samples.size - ok.size
    note = f" ({dropped} resamples undefined, left out)" if dropped else ""
    return Interval(estimate, float(lo), float(hi), method + note)


def boot_label(boot: ClusterBootstrap) -> str:
    unit = "woman" if boot.n_clusters < boot.clusters.size else "row (rows independent)"
    return f"bootstrap percentile, {boot.n_boot} resamples by {unit}, seed {boot.seed}"


@dataclass(frozen=True)
class AucResult:
    auc: Interval
    samples: Floats  # the resampled AUCs (NaN where undefined)
    fpr_grid: Floats
    tpr_low: Floats  # pointwise 95% band of TPR at each FPR of the grid
    tpr_high: Floats


def bootstrap_auc(
    scores: Floats, labels: NDArray[np.integer], boot: ClusterBootstrap, grid_points: int = 101
) -> AucResult:
    """AUC with its clustered interval and, unless grid_points is 0, a pointwise ROC band
    (vertical averaging: TPR of each resample at fixed FPRs, 2.5th-97.5th percentiles)."""
    lv = _levels(scores, labels, boot.clusters, boot.n_clusters)
    grid = np.linspace(0.0, 1.0, grid_points)
    tprs: list[Floats] = []

    def stat(counts: Floats) -> Floats:
        c = np.ascontiguousarray(counts.T)
        p, n = np.asarray(lv.pos @ c), np.asarray(lv.neg @ c)
        if grid_points:
            tpr, fpr = _rates(p, n)
            for j in range(c.shape[1]):
                if np.isfinite(tpr[-1, j]) and np.isfinite(fpr[-1, j]):
                    tprs.append(np.interp(grid, fpr[:, j], tpr[:, j]))
        return _auc_cols(p, n)

    samples = boot.run(stat)
    band = np.array(tprs) if tprs else np.full((1, grid.size), np.nan)
    return AucResult(
        auc=percentile_interval(auc(scores, labels), samples, boot_label(boot)),
        samples=samples,
        fpr_grid=grid,
        tpr_low=np.percentile(band, 2.5, axis=0),
        tpr_high=np.percentile(band, 97.5, axis=0),
    )


def weighted_auc(scores: Floats, labels: NDArray[np.integer], weights: Floats) -> Floats:
    """AUC for each row of a (b, rows) weight matrix: ties one half, weights as multiplicities."""
    lv = _levels(scores, labels, np.arange(scores.size, dtype=np.intp), scores.size)
    w = np.ascontiguousarray(weights.T)
    return _auc_cols(np.asarray(lv.pos @ w), np.asarray(lv.neg @ w))


def bootstrap_auc_samples(
    scores: Floats, labels: NDArray[np.integer], boot: ClusterBootstrap
) -> Floats:
    """Only the resampled AUCs (no ROC band): for paired differences and subgroups."""
    return bootstrap_auc(scores, labels, boot, grid_points=0).samples


# --- DeLong ---------------------------------------------------------------------------------


def delong_components(
    scores: Floats, labels: NDArray[np.integer]
) -> tuple[float, Floats, Floats]:
    """AUC and DeLong's structural components V10 (per cancer) and V01 (per non-cancer).

    Sun & Xu (2014) midrank form: V10_i = (rank of cancer i among all - its rank among
    cancers) / n0, i.e. the share of non-cancers it outscores (ties one half).
    """
    pos = labels == 1
    x, y = scores[pos], scores[~pos]
    n1, n0 = x.size, y.size
    if n1 < 2 or n0 < 2:
        raise ValueError("DeLong needs at least two cancers and two non-cancers")
    all_ranks = sps.rankdata(np.concatenate([x, y]))
    v10 = (all_ranks[:n1] - sps.rankdata(x)) / n0
    v01 = 1.0 - (all_ranks[n1:] - sps.rankdata(y)) / n1
    return float(v10.mean()), v10, v01


def delong_covariance(
    models: list[Floats], labels: NDArray[np.integer]
) -> tuple[Floats, Floats]:
    """AUCs of k models on the same exams and their k x k DeLong covariance matrix."""
    parts = [delong_components(s, labels) for s in models]
    aucs = np.array([p[0] for p in parts])
    v10 = np.array([p[1] for p in parts])
    v01 = np.array([p[2] for p in parts])
    s10 = np.atleast_2d(np.cov(v10))
    s01 = np.atleast_2d(np.cov(v01))
    return aucs, s10 / v10.shape[1] + s01 / v01.shape[1]


def delong_interval(scores: Floats, labels: NDArray[np.integer]) -> Interval:
    aucs, cov = delong_covariance([scores], labels)
    se = float(np.sqrt(cov[0, 0]))
    a = float(aucs[0])
    return Interval(a, max(0.0, a - Z95 * se), min(1.0, a + Z95 * se),
                    "DeLong, exams assumed independent")


@dataclass(frozen=True)
class DeLongTest:
    auc_a: float
    auc_b: float
    difference: float  # a - b
    se: float
    z: float
    p_value: float  # two-sided
    low: float  # 95% CI of the difference
    high: float

    def as_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


def delong_test(a: Floats, b: Floats, labels: NDArray[np.integer]) -> DeLongTest:
    """DeLong, DeLong & Clarke-Pearson (1988): paired test of two AUCs on the same exams."""
    aucs, cov = delong_covariance([a, b], labels)
    diff = float(aucs[0] - aucs[1])
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    se = float(np.sqrt(max(var, 0.0)))
    z = diff / se if se > 0 else (0.0 if diff == 0 else float(np.sign(diff)) * np.inf)
    p = float(2 * sps.norm.sf(abs(z)))
    return DeLongTest(float(aucs[0]), float(aucs[1]), diff, se, float(z), p,
                      diff - Z95 * se, diff + Z95 * se)


# --- proportions ----------------------------------------------------------------------------


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval: good coverage near 0 and 1, where the bootstrap collapses."""
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def clopper_pearson(k: int, n: int) -> tuple[float, float]:
    """Exact binomial interval: used for rare events such as cancers below a rule-out cut."""
    if n == 0:
        return float("nan"), float("nan")
    lo = 0.0 if k == 0 else float(sps.beta.ppf(0.025, k, n - k + 1))
    hi = 1.0 if k == n else float(sps.beta.ppf(0.975, k + 1, n - k))
    return lo, hi


@dataclass(frozen=True)
class OperatingPoint:
    name: str
    threshold: float
    sensitivity: Interval  # clustered bootstrap
    specificity: Interval
    sensitivity_wilson: tuple[float, float]  # exam-level, ignores clustering
    specificity_wilson: tuple[float, float]
    flagged: int
    true_positives: int
    cancers: int
    true_negatives: int
    non_cancers: int

    def as_dict(self) -> dict[str, object]:
        d = dict(self.__dict__)
        d["sensitivity"] = self.sensitivity.as_dict()
        d["specificity"] = self.specificity.as_dict()
        return d


def operating_points(
    scores: Floats,
    labels: NDArray[np.integer],
    thresholds: dict[str, float],
    boot: ClusterBootstrap,
) -> list[OperatingPoint]:
    """Sensitivity and specificity of "flag if score >= threshold" at each named threshold."""
    names = list(thresholds)
    cuts = np.array([thresholds[n] for n in names], dtype=np.float64)
    flag = (scores[:, None] >= cuts[None, :]).astype(np.float64)  # rows x thresholds
    pos = (labels == 1).astype(np.float64)
    # per woman: cancers flagged, non-cancers not flagged, cancers, non-cancers
    tp_w = boot.by_cluster(flag * pos[:, None])
    tn_w = boot.by_cluster((1.0 - flag) * (1.0 - pos)[:, None])
    p_w, n_w = boot.by_cluster(pos), boot.by_cluster(1.0 - pos)

    def stat(c: Floats) -> Floats:
        with np.errstate(invalid="ignore", divide="ignore"):
            sens = boot.total(c, tp_w) / boot.total(c, p_w)[:, None]
            spec = boot.total(c, tn_w) / boot.total(c, n_w)[:, None]
        return np.hstack([sens, spec])

    samples = boot.run(stat) if names else np.zeros((0, 0))
    label = boot_label(boot)
    out = []
    n1, n0 = int(pos.sum()), int(len(pos) - pos.sum())
    for j, name in enumerate(names):
        tp = int((flag[:, j] * pos).sum())
        tn = int(((1 - flag[:, j]) * (1 - pos)).sum())
        sens = tp / n1 if n1 else float("nan")
        spec = tn / n0 if n0 else float("nan")
        out.append(OperatingPoint(
            name=name, threshold=float(cuts[j]),
            sensitivity=percentile_interval(sens, samples[:, j], label),
            specificity=percentile_interval(spec, samples[:, len(names) + j], label),
            sensitivity_wilson=wilson(tp, n1), specificity_wilson=wilson(tn, n0),
            flagged=int(flag[:, j].sum()), true_positives=tp, cancers=n1,
            true_negatives=tn, non_cancers=n0,
        ))
    return out
