"""PNG figures for the evaluate, simulate and monitor reports (matplotlib, Agg: no display).

Each function takes the JSON-ready figures the report also prints (so a plot never shows a
number the tables do not), writes one PNG and returns its path. Figures are closed after
saving; a long batch does not accumulate open figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: the toolkit runs on servers without a display

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

COLOURS = ("#1f5fa8", "#c0392b", "#2e8b57", "#8e44ad", "#d68910", "#555555")
ORDER_COLOURS = {"fifo": "#555555", "score": "#c0392b", "score+ceiling": "#1f5fa8"}


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _title(fig: Figure, notice: str | None, text: str) -> None:
    fig.suptitle(text + (f"\n{notice}" if notice else ""), fontsize=10)


def roc(models: list[dict[str, Any]], path: Path, notice: str | None = None) -> Path:
    fig, ax = plt.subplots(figsize=(5.2, 5.2))
    for k, m in enumerate(models):
        c = COLOURS[k % len(COLOURS)]
        r, a = m["roc"], m["auc"]
        ax.fill_between(r["band_fpr"], r["band_low"], r["band_high"], color=c, alpha=0.18,
                        linewidth=0)
        ax.plot(r["fpr"], r["tpr"], color=c, linewidth=1.6,
                label=f"{m['model']['name']} {m['model']['version']}: AUC {a['estimate']:.3f} "
                      f"({a['low']:.3f}-{a['high']:.3f})")
        for op in m["operating_points"]:
            ax.plot(1 - op["specificity"]["estimate"], op["sensitivity"]["estimate"], "o",
                    color=c, markersize=5)
            ax.annotate(op["name"], (1 - op["specificity"]["estimate"],
                                     op["sensitivity"]["estimate"]),
                        textcoords="offset points", xytext=(5, -10), fontsize=7, color=c)
    ax.plot([0, 1], [0, 1], ":", color="#999999", linewidth=1)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="1 - specificity (false positive rate)",
           ylabel="sensitivity (true positive rate)")
    ax.legend(loc="lower right", fontsize=7, title="shaded: pointwise 95% band",
              title_fontsize=7)
    ax.grid(alpha=0.3)
    _title(fig, notice, "ROC")
    return _save(fig, path)


def histogram(scores: np.ndarray, labels: np.ndarray, thresholds: dict[str, float], path: Path,
              notice: str | None = None) -> Path:
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    lo, hi = float(scores.min()), float(scores.max())
    if hi <= lo:  # one distinct score: give the single bar a width
        lo, hi = lo - 0.5, hi + 0.5
    bins = np.linspace(lo, hi, 41).tolist()
    for value, name, c in ((0, "no cancer", COLOURS[0]), (1, "cancer", COLOURS[1])):
        s = scores[labels == value]
        ax.hist(s, bins=bins, density=True, histtype="stepfilled", alpha=0.35, color=c,
                label=f"{name} (n={s.size})")
        ax.hist(s, bins=bins, density=True, histtype="step", color=c, linewidth=1.2)
    for name, t in thresholds.items():
        ax.axvline(t, color="#333333", linestyle="--", linewidth=1)
        ax.annotate(name, (t, ax.get_ylim()[1] * 0.95), rotation=90, fontsize=7,
                    va="top", ha="right",
                    bbox={"facecolor": "white", "alpha": 0.8, "linewidth": 0, "pad": 1})
    ax.set(xlabel="score", ylabel="density (each label sums to 1)")
    ax.legend(fontsize=8)
    _title(fig, notice, "Score distribution by label")
    return _save(fig, path)


def calibration(cal: dict[str, Any], path: Path, notice: str | None = None) -> Path:
    fig, ax = plt.subplots(figsize=(5.2, 5.2))
    bins = cal["bins"]
    x = np.array([b["mean_score"] for b in bins])
    y = np.array([b["observed"] for b in bins])
    lo = np.array([b["observed_low"] for b in bins])
    hi = np.array([b["observed_high"] for b in bins])
    ax.plot([0, 1], [0, 1], ":", color="#999999", linewidth=1, label="perfect calibration")
    ax.errorbar(x, y, yerr=[y - lo, hi - y], fmt="o-", color=COLOURS[0], capsize=3,
                markersize=4, label="observed (Wilson 95%)")
    top = float(max(hi.max(initial=0), x.max(initial=0)) * 1.1) or 1.0
    ax.set(xlim=(0, min(1.0, top)), ylim=(0, min(1.0, top)), xlabel="mean score in bin",
           ylabel="observed cancer rate")
    slope = "n/a" if cal["slope"] is None else f"{cal['slope']:.2f}"
    inter = "n/a" if cal["intercept"] is None else f"{cal['intercept']:.2f}"
    ax.legend(fontsize=8, title=f"Brier {cal['brier']:.4f}, slope {slope}, intercept {inter}",
              title_fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    _title(fig, notice, f"Calibration ({len(bins)} equal-count bins)")
    return _save(fig, path)


def subgroups(model: dict[str, Any], path: Path, notice: str | None = None) -> Path:
    rows = [r for r in model["subgroups"] if r["auc"] is not None]
    fig, ax = plt.subplots(figsize=(6.4, 0.9 + 0.32 * max(1, len(rows))))
    overall = model["auc"]["estimate"]
    for i, r in enumerate(rows):
        a = r["auc"]
        ax.errorbar(a["estimate"], i, xerr=[[a["estimate"] - a["low"]], [a["high"] -
                    a["estimate"]]], fmt="s", color=COLOURS[0], capsize=3, markersize=4)
    ax.axvline(overall, color=COLOURS[1], linestyle="--", linewidth=1, label="all exams")
    ax.set_yticks(range(len(rows)),
                  [f"{r['dimension']} {r['group']} (n={r['rows']}, {r['cancers']} ca)"
                   for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set(xlabel="AUC (95% clustered bootstrap)")
    ax.legend(fontsize=7, loc="lower left")
    ax.grid(alpha=0.3, axis="x")
    _title(fig, notice, "AUC by subgroup")
    return _save(fig, path)


def rule_out(ro: dict[str, Any], path: Path, notice: str | None = None) -> Path:
    rows = [r for r in ro["rows"] if r["ruled_out"] > 0]
    share = np.array([r["share"]["estimate"] for r in rows]) * 100
    missed = np.array([r["share_of_cancers"]["estimate"] for r in rows]) * 100
    m_lo = np.array([r["share_of_cancers"]["low"] for r in rows]) * 100
    m_hi = np.array([r["share_of_cancers"]["high"] for r in rows]) * 100
    fo = np.array([r["false_omission_rate"]["estimate"] for r in rows]) * 1000
    fo_hi = np.array([r["false_omission_rate"]["high"] for r in rows]) * 1000
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9.6, 4.0))
    a1.fill_between(share, m_lo, m_hi, color=COLOURS[1], alpha=0.2, linewidth=0)
    a1.plot(share, missed, "-", color=COLOURS[1])
    a1.set(xlabel="exams ruled out (%)", ylabel="cancers among them (% of all cancers)",
           title="Cancers ruled out (exact 95%)")
    a2.plot(share, fo, "-", color=COLOURS[0], label="false omission rate")
    a2.plot(share, fo_hi, ":", color=COLOURS[0], label="upper 95% (exact)")
    a2.set(xlabel="exams ruled out (%)", ylabel="cancers per 1000 ruled-out exams",
           title="False omission rate")
    a2.legend(fontsize=8)
    for ax in (a1, a2):
        ax.grid(alpha=0.3)
        best = ro["largest_share_without_missed_cancer"] * 100
        ax.axvline(best, color="#333333", linestyle="--", linewidth=1)
    a1.annotate("largest share with\nno cancer ruled out", (best, a1.get_ylim()[1] * 0.9),
                fontsize=7, xytext=(4, 0), textcoords="offset points")
    _title(fig, notice, "Rule-out of the lowest scores (ruled out = score < threshold)")
    return _save(fig, path)


def turnaround(tat_hours: dict[str, np.ndarray], abnormal: np.ndarray, path: Path,
               notice: str | None = None) -> Path:
    """Empirical distribution of turnaround per ordering: abnormal exams, and all exams."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9.6, 4.0), sharey=True)
    for name, tat in tat_hours.items():
        c = ORDER_COLOURS.get(name, COLOURS[-1])
        for ax, values in ((a1, tat[abnormal]), (a2, tat)):
            v = np.sort(np.maximum(values, 1e-3))
            if v.size == 0:
                continue
            ax.step(v, np.arange(1, v.size + 1) / v.size, where="post", color=c,
                    label=f"{name}: mean {v.mean():.1f} h, max {v.max():.0f} h")
    for ax, title in ((a1, f"Abnormal exams (n={int(abnormal.sum())})"),
                      (a2, f"All exams (n={abnormal.size})")):
        ax.set_xscale("log")
        ax.set(xlabel="turnaround (hours, log scale)", title=title)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="lower right")
    a1.set_ylabel("share of exams read within")
    _title(fig, notice, "Reading-order simulation: turnaround by ordering")
    return _save(fig, path)


def monitor(weeks: list[dict[str, Any]], path: Path, notice: str | None = None) -> Path:
    vendors = sorted({w["vendor"] for w in weeks})
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(9.6, 6.4), sharex=True)
    labels = sorted({w["week"] for w in weeks})
    pos = {wk: i for i, wk in enumerate(labels)}
    for k, v in enumerate(vendors):
        rows = [w for w in weeks if w["vendor"] == v]
        x = [pos[w["week"]] for w in rows]
        c = COLOURS[k % len(COLOURS)]
        a1.fill_between(x, [w["q25"] for w in rows], [w["q75"] for w in rows], color=c,
                        alpha=0.15, linewidth=0)
        a1.plot(x, [w["median"] for w in rows], "o-", color=c, markersize=3, label=v)
        a2.plot(x, [w["psi"] if w["psi"] is not None else np.nan for w in rows], "o-",
                color=c, markersize=3, label=v)
    ref = sorted({pos[w["week"]] for w in weeks if w["reference"]})
    for ax in (a1, a2):  # the reference window, shaded
        if ref:
            ax.axvspan(ref[0] - 0.5, ref[-1] + 0.5, color="#dddddd", alpha=0.5, linewidth=0)
    if ref:
        a2.annotate("reference", (ref[0] - 0.4, 0), fontsize=7, color="#555555",
                    xytext=(0, 4), textcoords="offset points")
    a2.axhline(0.1, color="#999999", linestyle=":", linewidth=1)
    a2.axhline(0.25, color="#c0392b", linestyle="--", linewidth=1, label="PSI 0.25: shift")
    a1.set(ylabel="score: median, IQR shaded")
    a2.set(ylabel="PSI vs reference", xlabel="ISO week")
    step = max(1, len(labels) // 16)
    a2.set_xticks(range(0, len(labels), step), labels[::step], rotation=45, fontsize=7)
    a1.legend(fontsize=7, ncol=3)
    a2.legend(fontsize=7, ncol=3)
    for ax in (a1, a2):
        ax.grid(alpha=0.3)
    _title(fig, notice, "Score distribution per vendor and ISO week")
    return _save(fig, path)
