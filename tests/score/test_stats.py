"""workers/score/stats.py checked against independent computations: scipy's Mann-Whitney U,
brute-force pairwise comparisons, a published ROC data set, scipy's binomial intervals, and
Monte Carlo (the spread of the AUC over many simulated data sets, and interval coverage)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from workers.score import stats

# Hanley & McNeil (Radiology 1982), table 1: 109 CT images rated 1 (definitely normal) to 5
# (definitely abnormal); published area under the (trapezoidal, i.e. Wilcoxon) curve 0.893.
HM_NORMAL = (33, 6, 6, 11, 2)
HM_ABNORMAL = (3, 2, 2, 11, 33)


def hanley_mcneil() -> tuple[np.ndarray, np.ndarray]:
    ratings = np.arange(1, 6, dtype=np.float64)
    scores = np.concatenate([np.repeat(ratings, HM_NORMAL), np.repeat(ratings, HM_ABNORMAL)])
    labels = np.concatenate([np.zeros(sum(HM_NORMAL)), np.ones(sum(HM_ABNORMAL))])
    return scores, labels.astype(np.int8)


def binormal(rng: np.random.Generator, n1: int, n0: int, d: float) -> tuple[np.ndarray, ...]:
    labels = np.concatenate([np.ones(n1), np.zeros(n0)]).astype(np.int8)
    return rng.normal(d * labels, 1.0), labels


def brute_psi(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """psi(x_i, y_j) = 1 if cancer i outscores non-cancer j, 1/2 on a tie, else 0."""
    x, y = scores[labels == 1][:, None], scores[labels == 0][None, :]
    return (x > y) + 0.5 * (x == y)


def test_auc_equals_mann_whitney_u_with_ties() -> None:
    rng = np.random.default_rng(1)
    labels = (rng.random(3000) < 0.1).astype(np.int8)
    scores = np.round(rng.normal(labels * 0.8, 1.0), 1)  # rounding makes many ties
    u = sps.mannwhitneyu(scores[labels == 1], scores[labels == 0]).statistic
    expected = u / (labels.sum() * (labels.size - labels.sum()))
    assert stats.auc(scores, labels) == pytest.approx(expected, abs=1e-12)
    assert stats.auc(scores, labels) == pytest.approx(brute_psi(scores, labels).mean(), abs=1e-12)


def test_auc_published_example_hanley_mcneil() -> None:
    scores, labels = hanley_mcneil()
    assert round(stats.auc(scores, labels), 3) == 0.893


def test_roc_area_by_trapezoids_equals_auc() -> None:
    scores, labels = hanley_mcneil()
    fpr, tpr, thr = stats.roc_points(scores, labels)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert np.trapezoid(tpr, fpr) == pytest.approx(stats.auc(scores, labels), abs=1e-12)
    # threshold 5 ("flag if rating >= 5"): 33/51 abnormal, 2/58 normal
    k = int(np.flatnonzero(thr == 5.0)[0])
    assert (tpr[k], fpr[k]) == pytest.approx((33 / 51, 2 / 58))


def test_weighted_auc_equals_auc_of_replicated_rows() -> None:
    """The bootstrap's inner step: integer weights act exactly as repeated rows."""
    rng = np.random.default_rng(2)
    labels = (rng.random(400) < 0.3).astype(np.int8)
    scores = np.round(rng.normal(labels, 1.0), 1)
    weights = rng.integers(0, 4, size=(5, 400)).astype(np.float64)
    got = stats.weighted_auc(scores, labels, weights)
    for b in range(5):
        rep = weights[b].astype(int)
        assert got[b] == pytest.approx(
            stats.auc(np.repeat(scores, rep), np.repeat(labels, rep)), abs=1e-12)


def test_bootstrap_resamples_women_with_replacement_and_is_seeded() -> None:
    clusters = np.repeat(np.arange(50), 3).astype(np.intp)
    boot = stats.ClusterBootstrap(clusters, 70, seed=5)
    counts = np.vstack(list(boot.counts()))
    assert counts.shape == (70, 50)
    assert np.all(counts.sum(axis=1) == 50)  # each resample draws as many women as there are
    again = np.vstack(list(stats.ClusterBootstrap(clusters, 70, seed=5).counts()))
    other = np.vstack(list(stats.ClusterBootstrap(clusters, 70, seed=6).counts()))
    assert np.array_equal(counts, again) and not np.array_equal(counts, other)
    # every row of a woman gets her count: by_cluster sums rows per woman
    assert np.array_equal(boot.by_cluster(np.ones(150)), np.full(50, 3.0))


def test_bootstrap_auc_is_deterministic_and_brackets_the_estimate() -> None:
    rng = np.random.default_rng(3)
    scores, labels = binormal(rng, 80, 400, 1.0)
    clusters = np.arange(scores.size, dtype=np.intp)
    a = stats.bootstrap_auc(scores, labels, stats.ClusterBootstrap(clusters, 1000, 11))
    b = stats.bootstrap_auc(scores, labels, stats.ClusterBootstrap(clusters, 1000, 11))
    assert a.auc == b.auc and np.array_equal(a.samples, b.samples)
    assert a.auc.low < a.auc.estimate < a.auc.high
    assert np.all(a.tpr_low <= a.tpr_high)
    fpr, tpr, _ = stats.roc_points(scores, labels)
    mid = np.interp(a.fpr_grid, fpr, tpr)
    inside = (a.tpr_low - 1e-9 <= mid) & (mid <= a.tpr_high + 1e-9)
    assert inside.mean() > 0.95  # the observed curve lies in its own pointwise band


def test_delong_components_match_brute_force_structural_components() -> None:
    rng = np.random.default_rng(4)
    labels = (rng.random(300) < 0.3).astype(np.int8)
    scores = np.round(rng.normal(labels * 0.7, 1.0), 1)
    a, v10, v01 = stats.delong_components(scores, labels)
    psi = brute_psi(scores, labels)
    assert np.allclose(v10, psi.mean(axis=1)) and np.allclose(v01, psi.mean(axis=0))
    assert a == pytest.approx(psi.mean())
    other = np.round(scores + rng.normal(0, 1.0, 300), 1)
    _, cov = stats.delong_covariance([scores, other], labels)
    psi2 = brute_psi(other, labels)
    m, n = psi.shape
    s10 = np.cov(np.vstack([psi.mean(axis=1), psi2.mean(axis=1)]))
    s01 = np.cov(np.vstack([psi.mean(axis=0), psi2.mean(axis=0)]))
    assert np.allclose(cov, s10 / m + s01 / n)  # DeLong et al. 1988, eq. for S = S10/m + S01/n


def test_delong_standard_errors_match_monte_carlo_spread() -> None:
    """Across 400 simulated data sets, the SD of the AUC (and of a paired AUC difference) is
    what DeLong's variance estimates, on average."""
    rng = np.random.default_rng(5)
    aucs, diffs, se, se_diff = [], [], [], []
    for _ in range(400):
        labels = np.concatenate([np.ones(60), np.zeros(140)]).astype(np.int8)
        shared = rng.normal(0, 1, 200)
        a = shared + 1.2 * labels + rng.normal(0, 0.6, 200)
        b = shared + 0.8 * labels + rng.normal(0, 0.6, 200)
        aucs.append(stats.auc(a, labels))
        se.append(float(np.sqrt(stats.delong_covariance([a], labels)[1][0, 0])))
        t = stats.delong_test(a, b, labels)
        diffs.append(t.difference)
        se_diff.append(t.se)
    assert np.std(aucs, ddof=1) == pytest.approx(np.mean(se), rel=0.10)
    assert np.std(diffs, ddof=1) == pytest.approx(np.mean(se_diff), rel=0.12)


def test_delong_test_detects_a_better_model_and_not_an_identical_one() -> None:
    rng = np.random.default_rng(6)
    labels = (rng.random(1500) < 0.2).astype(np.int8)
    good = rng.normal(1.5 * labels, 1.0)
    weak = rng.normal(0.5 * labels, 1.0)
    t = stats.delong_test(good, weak, labels)
    assert t.difference > 0 and t.p_value < 1e-6 and t.low > 0
    same = stats.delong_test(good, good, labels)
    assert same.difference == 0 and same.p_value == 1.0


def test_bootstrap_interval_coverage_near_95_percent() -> None:
    """Binormal data with a known AUC = Phi(d / sqrt 2); 120 data sets x 1000 resamples."""
    rng = np.random.default_rng(7)
    d = 1.0
    truth = sps.norm.cdf(d / np.sqrt(2))
    hits = 0
    reps = 120
    for r in range(reps):
        scores, labels = binormal(rng, 60, 120, d)
        boot = stats.ClusterBootstrap(np.arange(180, dtype=np.intp), 1000, seed=r)
        res = stats.bootstrap_auc(scores, labels, boot, grid_points=0).auc
        hits += res.low <= truth <= res.high
    # binomial SD of the coverage at 0.95 with 120 sets: 0.02
    assert 0.89 <= hits / reps <= 0.99


def clustered_data(rng: np.random.Generator, women: int, per: int, woman_sd: float
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of one woman share her label and a random effect (e.g. her four views)."""
    woman_label = (rng.random(women) < 0.3).astype(np.int8)
    effect = rng.normal(0, woman_sd, women)
    clusters = np.repeat(np.arange(women), per).astype(np.intp)
    labels = woman_label[clusters]
    scores = effect[clusters] + 1.0 * labels + rng.normal(0, 0.5, clusters.size)
    return scores, labels, clusters


def test_clustered_bootstrap_is_wider_than_naive_when_exams_are_correlated() -> None:
    rng = np.random.default_rng(8)
    scores, labels, clusters = clustered_data(rng, 300, 4, woman_sd=1.0)
    naive = np.arange(scores.size, dtype=np.intp)
    wc = stats.bootstrap_auc(scores, labels, stats.ClusterBootstrap(clusters, 1000, 1), 0).auc
    wn = stats.bootstrap_auc(scores, labels, stats.ClusterBootstrap(naive, 1000, 1), 0).auc
    assert (wc.high - wc.low) > 1.4 * (wn.high - wn.low)
    # without a shared effect or shared label, clustering changes little
    lab2 = labels[rng.permutation(scores.size)]
    indep = rng.normal(lab2 * 1.0, 1.0)
    ic = stats.bootstrap_auc(indep, lab2, stats.ClusterBootstrap(clusters, 1000, 1), 0).auc
    inn = stats.bootstrap_auc(indep, lab2, stats.ClusterBootstrap(naive, 1000, 1), 0).auc
    assert (ic.high - ic.low) == pytest.approx(inn.high - inn.low, rel=0.2)


def test_clustered_bootstrap_covers_where_the_naive_one_does_not() -> None:
    """Rows of a woman share her label and effect; every cancer/non-cancer pair is from two
    women, so the true AUC is Phi(1 / sqrt(2 (1 + 0.5^2))). 100 data sets x 1000 resamples."""
    rng = np.random.default_rng(9)
    truth = sps.norm.cdf(1.0 / np.sqrt(2 * (1.0 + 0.25)))
    aucs, width_c, hit_c, hit_n = [], [], 0, 0
    reps = 100
    for r in range(reps):
        scores, labels, clusters = clustered_data(rng, 150, 4, woman_sd=1.0)
        aucs.append(stats.auc(scores, labels))
        naive = np.arange(scores.size, dtype=np.intp)
        c = stats.bootstrap_auc(scores, labels, stats.ClusterBootstrap(clusters, 1000, r), 0)
        n = stats.bootstrap_auc(scores, labels, stats.ClusterBootstrap(naive, 1000, r), 0)
        width_c.append(c.auc.high - c.auc.low)
        hit_c += c.auc.low <= truth <= c.auc.high
        hit_n += n.auc.low <= truth <= n.auc.high
    assert np.mean(aucs) == pytest.approx(truth, abs=0.01)
    assert 0.88 <= hit_c / reps <= 0.99  # near 95% (binomial SD 0.022)
    assert hit_n / reps < 0.80  # rows treated as independent: far too narrow
    assert np.mean(width_c) == pytest.approx(2 * 1.96 * np.std(aucs, ddof=1), rel=0.2)


def test_wilson_and_clopper_pearson_match_scipy() -> None:
    for k, n in ((0, 10), (8, 10), (3, 250), (250, 250), (17, 40)):
        ci = sps.binomtest(k, n).proportion_ci(method="wilson")
        assert stats.wilson(k, n) == pytest.approx((ci.low, ci.high), abs=1e-9)
        ci = sps.binomtest(k, n).proportion_ci(method="exact")
        assert stats.clopper_pearson(k, n) == pytest.approx((ci.low, ci.high), abs=1e-9)
    assert stats.wilson(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)


def test_operating_points_count_directly() -> None:
    rng = np.random.default_rng(10)
    labels = (rng.random(2000) < 0.1).astype(np.int8)
    scores = rng.normal(labels * 1.5, 1.0)
    clusters = np.repeat(np.arange(1000), 2).astype(np.intp)
    ops = stats.operating_points(scores, labels, {"low": -0.5, "high": 1.0},
                                 stats.ClusterBootstrap(clusters, 1000, 0))
    for op, t in zip(ops, (-0.5, 1.0), strict=True):
        flag = scores >= t
        assert op.true_positives == int((flag & (labels == 1)).sum())
        assert op.sensitivity.estimate == pytest.approx(flag[labels == 1].mean())
        assert op.specificity.estimate == pytest.approx((~flag)[labels == 0].mean())
        assert op.sensitivity.low < op.sensitivity.estimate < op.sensitivity.high
        assert op.sensitivity_wilson == stats.wilson(op.true_positives, op.cancers)
        assert "woman" in op.sensitivity.method
