"""``deidgate model simulate``: the triage simulations from the literature, on a site's own
labelled evaluation set, before a score is allowed to change anyone's workflow.

Rule-out (MASAI, Lång et al. 2023: screen-reading workload -44% by single-reading most exams;
Lång et al. 2021: the lowest scores removed 19% of exams with no cancer among them): for each
threshold t, exams with score < t are "ruled out" (removed from reading, or single-read instead
of double-read). Reported per threshold:

- share of exams ruled out, with a clustered bootstrap interval (resampling women);
- cancers among them, as a count and as a share of all cancers (Clopper-Pearson, exact);
- false omission rate (cancers / exams ruled out): Clopper-Pearson, because cancers below a
  sensible cut are rare and a bootstrap interval collapses to [0, 0] when none is seen;
  the clustered bootstrap interval is given beside it;
- the reads saved under double reading: all reads of a removed exam (share), or one of two if
  it is single-read instead (share / 2).

Reading order (Nabulsi et al. 2021: abnormal turnaround 7-28% shorter; Baltruschat et al. 2021:
mean urgent turnaround 80 -> 36 min, the longest waits grew): readingqueue.py, run for FIFO,
score order, and score order with a wait ceiling, on the same arrivals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from workers.score import stats
from workers.score.readingqueue import (
    ALWAYS,
    POLICIES,
    Capacity,
    Hours,
    QueueRun,
    batch_arrivals,
    poisson_arrivals,
    seconds_since_week_start,
    simulate_queue,
    summarise,
)
from workers.score.table import ScoreTable

Floats = np.ndarray


def rule_out_thresholds(scores: Floats, named: dict[str, float], top_share: float = 0.6
                        ) -> list[float]:
    """Score quantiles from 0% to ``top_share`` in steps of 2%, plus the card's thresholds."""
    qs = np.quantile(scores, np.arange(0.0, top_share + 1e-9, 0.02))
    cuts = set(np.unique(qs).tolist()) | set(named.values())
    return sorted(float(c) for c in cuts)


def rule_out(
    table: ScoreTable, thresholds: list[float], n_boot: int, seed: int, score: str | None = None
) -> dict[str, Any]:
    labels = table.need_label()
    s = table.score(score)
    cuts = np.asarray(thresholds, dtype=np.float64)
    below = (s[:, None] < cuts[None, :]).astype(np.float64)  # rows x thresholds
    pos = (labels == 1).astype(np.float64)
    cancer_below = below * pos[:, None]
    boot = stats.ClusterBootstrap(table.woman_codes(), n_boot, seed)
    below_w, cancer_below_w = boot.by_cluster(below), boot.by_cluster(cancer_below)
    rows_w = boot.by_cluster(np.ones(len(table)))

    def stat(c: Floats) -> Floats:
        n_below = boot.total(c, below_w)
        with np.errstate(invalid="ignore", divide="ignore"):
            fo = boot.total(c, cancer_below_w) / n_below
        return np.hstack([n_below / boot.total(c, rows_w)[:, None], fo])

    samples = boot.run(stat)
    label = stats.boot_label(boot)
    n, n1, k = len(table), int(pos.sum()), len(thresholds)
    rows: list[dict[str, Any]] = []
    for j, t in enumerate(thresholds):
        nb, cb = int(below[:, j].sum()), int(cancer_below[:, j].sum())
        share = nb / n
        fo_rate = cb / nb if nb else float("nan")
        rows.append({
            "threshold": t,
            "ruled_out": nb,
            "share": stats.percentile_interval(share, samples[:, j], label).as_dict(),
            "cancers_ruled_out": cb,
            "cancers_total": n1,
            "share_of_cancers": _exact(cb, n1),
            "false_omission_rate": _exact(cb, nb),
            "false_omission_rate_bootstrap": stats.percentile_interval(
                fo_rate, samples[:, k + j], label).as_dict(),
            "reads_saved_if_removed": share,
            "reads_saved_if_single_read": share / 2,
        })
    lowest = float(s[labels == 1].min()) if n1 else float("inf")
    return {
        "rows": rows,
        # exact, not read off the grid: everything below the lowest-scored cancer
        "largest_share_without_missed_cancer": float(np.mean(s < lowest)),
        "lowest_cancer_score": lowest,
        "rule": "ruled out = score < threshold",
    }


def _exact(k: int, n: int) -> dict[str, Any]:
    lo, hi = stats.clopper_pearson(k, n)
    return {"estimate": k / n if n else float("nan"), "low": lo, "high": hi,
            "method": "Clopper-Pearson exact, exam-level"}


@dataclass(frozen=True)
class Arrivals:
    """How exams arrive: from the CSV's ``arrival`` column, or a generated pattern."""

    pattern: str = "poisson"  # "csv", "poisson" or "batch"
    per_hour: float | None = None  # poisson; None = load x reading capacity per open hour
    load: float = 0.95
    per_day: int | None = None  # batch; None = load x reads per day
    batch_hour: float = 16.0
    hours: Hours = field(default_factory=Hours)  # when exams are acquired (poisson, batch)


def make_arrivals(table: ScoreTable, spec: Arrivals, capacity: Capacity, seed: int
                  ) -> tuple[Floats, dict[str, Any]]:
    """Arrival seconds per row, and a description for the report."""
    n = len(table)
    rng = np.random.default_rng(seed)
    if spec.pattern == "csv":
        return seconds_since_week_start(table.need_arrival()), {"pattern": "csv"}
    order = rng.permutation(n)  # which exam arrives when: random, not by score or label
    if spec.pattern == "poisson":
        # default: an open day brings ``load`` x what the readers finish in a working day
        rate = spec.per_hour or spec.load * capacity.reads_per_day() / (
            spec.hours.seconds_per_day / 3600)
        times = poisson_arrivals(n, rate, spec.hours, rng)
        desc = {"pattern": "poisson", "per_hour": rate}
    elif spec.pattern == "batch":
        per_day = spec.per_day or max(1, round(spec.load * capacity.reads_per_day()))
        times = batch_arrivals(n, per_day, spec.batch_hour, spec.hours)
        desc = {"pattern": "batch", "per_day": per_day, "at_hour": spec.batch_hour}
    else:
        raise ValueError(f"unknown arrival pattern {spec.pattern!r} (csv, poisson, batch)")
    out = np.empty(n)
    out[order] = times
    desc["hours"] = _hours(spec.hours)
    return out, desc


def _hours(h: Hours) -> dict[str, Any]:
    return {"day_start": h.day_start, "day_end": h.day_end, "weekdays_only": h.weekdays_only}


def reading_order(
    table: ScoreTable,
    capacity: Capacity,
    arrivals: Arrivals,
    ceiling_hours: float,
    seed: int,
    score: str | None = None,
) -> tuple[dict[str, Any], dict[str, QueueRun], Floats]:
    labels = table.need_label()
    s = table.score(score)
    arrival, desc = make_arrivals(table, arrivals, capacity, seed)
    runs = {p: simulate_queue(arrival, s, capacity, p, ceiling_hours * 3600) for p in POLICIES}
    arrival_days = int(np.unique(np.floor(arrival / 86_400)).size)
    out: dict[str, Any] = {
        "arrivals": desc,
        "capacity": {"readers": capacity.readers, "reads_per_hour": capacity.reads_per_hour,
                     "reads_per_day": capacity.reads_per_day(), **_hours(capacity.hours)},
        "ceiling_hours": ceiling_hours,
        "arrival_days": arrival_days,
        "exams_per_arrival_day": len(table) / arrival_days,
        "orderings": {},
        "turnaround": "end of read minus arrival, hours, wall-clock",
    }
    abnormal = labels == 1
    for p, run in runs.items():
        tat = run.turnaround(arrival) / 3600
        out["orderings"][p] = {
            "abnormal": summarise(tat[abnormal]),
            "normal": summarise(tat[~abnormal]),
            "all": summarise(tat),
            "max_wait_hours": float(run.wait(arrival).max() / 3600),
            "last_read_day": float(run.end.max() / 86_400),
        }
    base = out["orderings"]["fifo"]["abnormal"].get("mean")
    for p in POLICIES:
        mean = out["orderings"][p]["abnormal"].get("mean")
        out["orderings"][p]["abnormal_mean_change_vs_fifo"] = (
            None if not base or mean is None else (mean - base) / base)
    return out, runs, arrival


def simulate(
    table: ScoreTable,
    thresholds: dict[str, float],
    capacity: Capacity,
    arrivals: Arrivals,
    *,
    ceiling_hours: float = 24.0,
    n_boot: int = 2000,
    seed: int = 0,
    score: str | None = None,
) -> tuple[dict[str, Any], dict[str, QueueRun], Floats]:
    """Both simulations: JSON-ready figures, and the queue runs and arrivals for plotting."""
    s, labels = table.score(score), table.need_label()
    cuts = rule_out_thresholds(s, thresholds)
    if labels.any():  # the cut just at the lowest-scored cancer: Lang 2021's "no cancer" share
        cuts = sorted({*cuts, float(s[labels == 1].min())})
    order, runs, arrival = reading_order(table, capacity, arrivals, ceiling_hours, seed, score)
    result = {
        "settings": {"bootstrap_resamples": n_boot, "seed": seed, "interval": "95%"},
        "rule_out": rule_out(table, cuts, n_boot, seed, score),
        "reading_order": order,
    }
    result["rule_out"]["card_thresholds"] = thresholds
    return result, runs, arrival


__all__ = ["ALWAYS", "Arrivals", "Capacity", "Hours", "rule_out", "simulate"]
