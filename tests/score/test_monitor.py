"""Drift monitoring: PSI by hand, KS against scipy, ISO weeks, and a vendor shift that shows."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from synthetic.scores import synthetic_scores
from workers.score.monitor import ALL, iso_weeks, monitor, psi


def test_psi_by_hand() -> None:
    reference = np.arange(10, dtype=np.float64)  # deciles put one value in each bin
    assert psi(reference, reference) == pytest.approx(0.0)
    current = np.array([0.0] * 5 + [9.0] * 5)  # half in the first bin, half in the last
    p, q = 0.1, 0.5
    expected = 2 * (q - p) * math.log(q / p) + 8 * (1e-4 - p) * math.log(1e-4 / p)
    assert psi(reference, current) == pytest.approx(expected)


def test_iso_weeks_follow_the_iso_calendar() -> None:
    t = np.array(["2024-12-30T10:00", "2025-01-05T23:59", "2021-01-03T08:00",
                  "2024-03-04T08:00"], dtype="datetime64[s]")
    assert iso_weeks(t).tolist() == ["2025-W01", "2025-W01", "2020-W53", "2024-W10"]


def test_a_vendor_shift_is_flagged_and_stable_vendors_are_not() -> None:
    t = synthetic_scores(6000, seed=1, weeks=12, drift_week=8, drift_vendor="vendor-B",
                         drift_shift=1.0)
    res = monitor(t, reference_weeks=4)
    flagged = {(a["vendor"], a["week"]) for a in res["alerts"] if a["flag"] == "shift"}
    assert flagged  # the shift shows
    assert {v for v, _ in flagged} <= {"vendor-B", ALL}
    weeks_b = {w for v, w in flagged if v == "vendor-B"}
    assert weeks_b == {f"2024-W{k:02d}" for k in range(9, 13)}  # index 8 on = W09 on
    for row in res["weeks"]:
        if row["vendor"] in ("vendor-A", "vendor-C") and row["psi"] is not None:
            assert row["psi"] < 0.1
    ref = [r for r in res["weeks"] if r["reference"]]
    assert {r["week"] for r in ref} == {"2024-W01", "2024-W02", "2024-W03", "2024-W04"}


def test_ks_and_descriptives_match_direct_computation() -> None:
    t = synthetic_scores(2000, seed=2, drift_week=None)
    res = monitor(t, reference_weeks=3)
    assert t.vendor is not None and t.arrival is not None
    weeks = iso_weeks(t.arrival)
    row = next(r for r in res["weeks"] if r["vendor"] == "vendor-A" and r["week"] == "2024-W06")
    ref = t.score()[(t.vendor == "vendor-A") & np.isin(weeks, ["2024-W01", "2024-W02",
                                                                "2024-W03"])]
    cur = t.score()[(t.vendor == "vendor-A") & (weeks == "2024-W06")]
    ks = sps.ks_2samp(ref, cur)
    assert row["ks"] == pytest.approx(ks.statistic) and row["ks_p"] == pytest.approx(ks.pvalue)
    assert row["n"] == cur.size and row["median"] == pytest.approx(np.median(cur))
    assert row["psi"] == pytest.approx(psi(ref, cur))


def test_reference_by_date_and_small_weeks_are_not_alerted() -> None:
    t = synthetic_scores(300, seed=3, drift_shift=3.0, drift_week=6)
    res = monitor(t, reference_until=np.datetime64("2024-01-29T00:00:00"), min_n=10_000)
    assert res["alerts"] == []
    assert all(r["flag"] in ("reference", "few exams") for r in res["weeks"])
    assert res["reference"][ALL]["weeks"] == ["2024-W01", "2024-W02", "2024-W03", "2024-W04"]
