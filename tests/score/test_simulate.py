"""Rule-out figures against direct counts, and the whole simulation on a generated set."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from synthetic.scores import synthetic_scores
from workers.score.readingqueue import Capacity, Hours
from workers.score.report import clean
from workers.score.simulate import Arrivals, make_arrivals, rule_out, simulate
from workers.score.table import ScoreTable


def small_table() -> ScoreTable:
    scores = np.array([0.01, 0.02, 0.02, 0.05, 0.1, 0.2, 0.3, 0.6, 0.8, 0.9])
    labels = np.array([0, 0, 0, 0, 1, 0, 0, 1, 0, 1], dtype=np.int8)
    return ScoreTable(exam=np.array([f"2.25.{i}" for i in range(10)]),
                      woman=np.array([f"W{i // 2}" for i in range(10)]),
                      scores={"score": scores}, label=labels)


def test_rule_out_counts_by_hand() -> None:
    ro = rule_out(small_table(), [0.02, 0.1, 0.5], n_boot=1000, seed=0)
    r0, r1, r2 = ro["rows"]
    assert (r0["ruled_out"], r0["cancers_ruled_out"]) == (1, 0)  # strictly below 0.02
    assert (r1["ruled_out"], r1["cancers_ruled_out"]) == (4, 0)
    assert (r2["ruled_out"], r2["cancers_ruled_out"]) == (7, 1)
    assert r2["share"]["estimate"] == pytest.approx(0.7)
    assert r2["false_omission_rate"]["estimate"] == pytest.approx(1 / 7)
    ci = sps.binomtest(1, 7).proportion_ci(method="exact")
    assert (r2["false_omission_rate"]["low"], r2["false_omission_rate"]["high"]) == \
        pytest.approx((ci.low, ci.high))
    assert r2["share_of_cancers"]["estimate"] == pytest.approx(1 / 3)
    assert r2["reads_saved_if_single_read"] == pytest.approx(0.35)
    # zero cancers ruled out still has an informative upper bound (exact), unlike a bootstrap
    assert r1["false_omission_rate"]["high"] == pytest.approx(1 - 0.025 ** (1 / 4))
    assert ro["largest_share_without_missed_cancer"] == pytest.approx(0.4)  # below 0.1


def test_rule_out_bootstrap_is_clustered_and_brackets_the_share() -> None:
    t = synthetic_scores(1500, seed=2)
    ro = rule_out(t, [0.01, 0.02, 0.05], n_boot=1000, seed=1)
    for r in ro["rows"]:
        s = r["share"]
        assert s["low"] <= s["estimate"] <= s["high"] and "by woman" in s["method"]


def test_generated_arrivals_are_assigned_at_random_not_by_score() -> None:
    t = synthetic_scores(3000, seed=3)
    cap = Capacity(2, 30.0, Hours(8, 16))
    a, desc = make_arrivals(t, Arrivals("poisson", load=0.9), cap, seed=4)
    assert desc["per_hour"] == pytest.approx(0.9 * 480 / 8)
    rho = sps.spearmanr(a, t.score()).statistic
    assert abs(rho) < 0.05
    b, desc = make_arrivals(t, Arrivals("batch", load=1.0), cap, seed=4)
    assert desc["per_day"] == 480 and np.unique(b).size == int(np.ceil(len(t) / 480))


def test_simulation_shows_the_published_directions_on_generated_data() -> None:
    t = synthetic_scores(3000, seed=5)
    cap = Capacity(2, 30.0, Hours(8, 16))
    result, runs, arrival = simulate(t, {"likely_normal_below": 0.02}, cap,
                                     Arrivals("poisson", load=0.95), ceiling_hours=8.0,
                                     n_boot=1000, seed=6)
    o = result["reading_order"]["orderings"]
    assert o["score"]["abnormal"]["mean"] < o["fifo"]["abnormal"]["mean"]
    assert o["score"]["abnormal_mean_change_vs_fifo"] < 0
    assert o["score"]["all"]["max"] > o["fifo"]["all"]["max"]
    assert o["score+ceiling"]["all"]["max"] < o["score"]["all"]["max"]
    assert o["fifo"]["all"]["mean"] == pytest.approx(o["score"]["all"]["mean"])
    assert {r["threshold"] for r in result["rule_out"]["rows"]} >= {0.02}
    assert set(runs) == {"fifo", "score", "score+ceiling"} and arrival.size == len(t)
    # deterministic given the seed
    again, _, _ = simulate(t, {"likely_normal_below": 0.02}, cap,
                           Arrivals("poisson", load=0.95), ceiling_hours=8.0, n_boot=1000,
                           seed=6)
    assert clean(again) == clean(result)  # clean: NaN (no exams ruled out) compares equal
