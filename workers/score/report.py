"""Self-contained HTML reports (and the JSON beside them) for evaluate, simulate and monitor.

One file a screening programme can archive or mail: PNGs inlined as base64, inline CSS, no
script, no CDN, no external font. The header says which model (name, version, and the demo
notice when the card carries it) and which data (counts only, never a pseudonym); every number
comes from the JSON written next to it.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterable
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from workers.score import plots
from workers.score.evaluate import data_summary
from workers.score.readingqueue import QueueRun
from workers.score.table import ScoreTable

_CSS = """body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;
max-width:62em;color:#222;line-height:1.4}h1{font-size:1.4em}h2{font-size:1.15em;
margin-top:1.6em;border-bottom:1px solid #ccc}table{border-collapse:collapse;margin:.6em 0;
font-size:.85em;display:block;overflow-x:auto}td,th{border:1px solid #ccc;padding:.2em .5em;
text-align:left;vertical-align:top;white-space:nowrap}th{background:#f3f3f3}.notice{background:#fff3cd;
border:1px solid #d39e00;padding:.5em 1em;font-weight:bold}img{max-width:100%}
.small{font-size:.85em;color:#555}"""


def clean(value: Any) -> Any:
    """JSON-safe: NaN and infinities become null, numpy scalars plain numbers."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(json.dumps(clean(data), indent=1, allow_nan=False) + "\n", encoding="utf-8")
    return path


def _num(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    if isinstance(v, int):
        return str(v)
    return f"{v:.{digits}f}"


def _ci(d: dict[str, Any] | None, digits: int = 3, scale: float = 1.0) -> str:
    if not d or d.get("estimate") is None:
        return "n/a"
    e, lo, hi = (None if d.get(k) is None else d[k] * scale for k in ("estimate", "low", "high"))
    return f"{_num(e, digits)} ({_num(lo, digits)}-{_num(hi, digits)})"


def _table(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> str:
    head = "".join(f"<th>{escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in r) + "</tr>"
                   for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<p><img alt="{escape(alt)}" src="data:image/png;base64,{data}"></p>'


def _page(title: str, models: list[dict[str, Any]], data: dict[str, Any], body: str) -> str:
    notices = sorted({m["notice"] for m in models if m.get("notice")})
    banner = "".join(f'<p class="notice">{escape(n)}</p>' for n in notices)
    model_rows = [(m["name"], m["version"], m.get("notice") or "") for m in models]
    return (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{escape(title)}</title>"
        f"<style>{_CSS}</style></head><body><h1>{escape(title)}</h1>{banner}"
        "<h2>Model</h2>" + _table(("name", "version", "note"), model_rows)
        + "<h2>Data (counts only)</h2>" + _table(("", "count"), sorted(data.items()))
        + body + "</body></html>\n"
    )


# --- evaluate -------------------------------------------------------------------------------


def _prop(op: dict[str, Any], which: str) -> str:
    """A subgroup proportion: the bootstrap interval, or Wilson's (marked W) where the
    proportion is 0 or 1 and a percentile bootstrap interval collapses to a point."""
    est = op[which]["estimate"]
    if est is not None and est in (0.0, 1.0):
        lo, hi = op[f"{which}_wilson"]
        return f"{_num(est, 2)} (W {_num(lo, 2)}-{_num(hi, 2)})"
    return _ci(op[which], 2)


def _model_section(m: dict[str, Any], figs: dict[str, Path]) -> str:
    name = f"{m['model']['name']} {m['model']['version']}"
    parts = [f"<h2>{escape(name)} (column '{escape(m['column'])}')</h2>",
             _table(("statistic", "estimate (95% CI)", "method"), [
                 ("AUC", _ci(m["auc"]), m["auc"]["method"]),
                 ("AUC", _ci(m.get("auc_delong")), (m.get("auc_delong") or {}).get(
                     "method", (m.get("auc_delong") or {}).get("note", ""))),
                 ("AUC", _ci(m["auc_exam_level_bootstrap"]),
                  m["auc_exam_level_bootstrap"]["method"]),
             ])]
    ops = m["operating_points"]
    if ops:
        parts.append("<p>Operating thresholds (flag if score &ge; threshold). Primary interval:"
                     " clustered bootstrap; Wilson (exam-level, ignores clustering) beside it, "
                     "and the one to read when a proportion is 0 or 1.</p>")
        parts.append(_table(
            ("threshold", "value", "flagged", "sensitivity", "Wilson", "specificity", "Wilson"),
            [(o["name"], _num(o["threshold"]), o["flagged"],
              f"{_ci(o['sensitivity'])} [{o['true_positives']}/{o['cancers']}]",
              "{:.3f}-{:.3f}".format(*o["sensitivity_wilson"]),
              f"{_ci(o['specificity'])} [{o['true_negatives']}/{o['non_cancers']}]",
              "{:.3f}-{:.3f}".format(*o["specificity_wilson"])) for o in ops]))
    cal = m["calibration"]
    if cal["applicable"]:
        parts.append(_table(("calibration", "value"), [
            ("Brier score", _num(cal["brier"], 4)),
            ("Brier score of predicting the prevalence", _num(cal["brier_prevalence"], 4)),
            ("calibration slope (1 = ideal)", _num(cal["slope"])),
            ("calibration intercept, slope fixed at 1 (0 = ideal)", _num(cal["intercept"])),
        ]))
    else:
        parts.append(f"<p>Calibration: not applicable ({escape(cal['reason'])}).</p>")
    if m["subgroups"]:
        parts.append("<h3>Subgroups</h3><p class=small>Each with its own clustered bootstrap; "
                     "W: Wilson interval where the proportion is 0 or 1.</p>" + _table(
            ("dimension", "group", "rows", "women", "cancers", "AUC (95% CI)",
             *(f"sens. @ {o['name']}" for o in ops), *(f"spec. @ {o['name']}" for o in ops)),
            [(r["dimension"], r["group"], r["rows"], r["women"], r["cancers"],
              _ci(r["auc"]) if r["auc"] else "not estimable",
              *(_prop(o, "sensitivity") for o in r["operating_points"]),
              *(_prop(o, "specificity") for o in r["operating_points"]))
             for r in m["subgroups"]]))
    for key, alt in (("hist", "score histograms"), ("calibration", "reliability curve"),
                     ("subgroups", "AUC by subgroup")):
        if key in figs:
            parts.append(_img(figs[key], alt))
    return "".join(parts)


def evaluate_outputs(result: dict[str, Any], table: ScoreTable, out: Path) -> list[Path]:
    """evaluate.json, the PNGs and evaluate.html in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    labels = table.need_label()
    models = result["models"]
    notice = next((m["model"]["notice"] for m in models if m["model"]["notice"]), None)
    written = [plots.roc(models, out / "roc.png", notice)]
    sections = [_img(written[0], "ROC curves")]
    for k, m in enumerate(models):
        suffix = "" if len(models) == 1 else f"_{k + 1}"
        figs = {"hist": plots.histogram(table.score(m["column"]), labels,
                                        m["model"]["thresholds"], out / f"hist{suffix}.png",
                                        notice)}
        if m["calibration"]["applicable"]:
            figs["calibration"] = plots.calibration(m["calibration"],
                                                    out / f"calibration{suffix}.png", notice)
        if any(r["auc"] for r in m["subgroups"]):
            figs["subgroups"] = plots.subgroups(m, out / f"subgroups{suffix}.png", notice)
        written += figs.values()
        sections.append(_model_section(m, figs))
    if "comparison" in result:
        c = result["comparison"]
        d = c["delong"]
        rows = [("clustered bootstrap", _ci(c["bootstrap_difference"]), "",
                 c["bootstrap_difference"]["method"])]
        if "z" in d:
            rows.insert(0, ("DeLong (exams independent)",
                            f"{d['difference']:.3f} ({d['low']:.3f}-{d['high']:.3f})",
                            f"z {d['z']:.2f}, p {d['p_value']:.4g}", "DeLong et al. 1988"))
        sections.insert(1, f"<h2>Comparison: AUC {escape(c['models'][0])} minus "
                           f"{escape(c['models'][1])}</h2>"
                        + _table(("method", "difference (95% CI)", "test", "note"), rows))
    html = _page("Model evaluation", [m["model"] for m in models], result["data"],
                 f'<p class="small">{result["settings"]["bootstrap_resamples"]} bootstrap '
                 f'resamples of women, seed {result["settings"]["seed"]}.</p>'
                 + "".join(sections))
    written.append(write_json(out / "evaluate.json", result))
    (out / "evaluate.html").write_text(html, encoding="utf-8")
    return [*written, out / "evaluate.html"]


# --- simulate -------------------------------------------------------------------------------


def simulate_outputs(
    result: dict[str, Any],
    table: ScoreTable,
    runs: dict[str, QueueRun],
    arrival: np.ndarray,
    model: dict[str, Any],
    out: Path,
) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    notice = model.get("notice")
    abnormal = table.need_label() == 1
    ro, order = result["rule_out"], result["reading_order"]
    written = [
        plots.rule_out(ro, out / "rule_out.png", notice),
        plots.turnaround({p: r.turnaround(arrival) / 3600 for p, r in runs.items()}, abnormal,
                         out / "turnaround.png", notice),
    ]
    card_cuts = set(ro["card_thresholds"].values())
    shown = [r for r in ro["rows"] if r["ruled_out"] > 0]
    ro_table = _table(
        ("threshold", "ruled out", "% of exams (95% CI)", "cancers ruled out",
         "% of cancers (exact)", "FOR per 1000 (exact)", "reads saved: removed / single-read"),
        [(f"{r['threshold']:.4g}" + (" (card)" if r["threshold"] in card_cuts else "")
          + (" (lowest cancer)" if r["threshold"] == ro["lowest_cancer_score"] else ""),
          r["ruled_out"], _ci(r["share"], 1, 100), f"{r['cancers_ruled_out']}/{r['cancers_total']}",
          _ci(r["share_of_cancers"], 1, 100), _ci(r["false_omission_rate"], 2, 1000),
          f"{r['reads_saved_if_removed']:.1%} / {r['reads_saved_if_single_read']:.1%}")
         for r in shown])
    o = order["orderings"]
    tat_rows = []
    for p, v in o.items():
        change = v["abnormal_mean_change_vs_fifo"]
        for group in ("abnormal", "all"):
            g = v[group]
            tat_rows.append((p, group, g["n"], _num(g.get("mean"), 2), _num(g.get("median"), 2),
                             _num(g.get("p95"), 1), _num(g.get("max"), 1),
                             "" if group != "abnormal" or change is None else f"{change:+.0%}"))
    cap, arr = order["capacity"], order["arrivals"]
    body = (
        "<h2>Rule-out</h2><p>Ruled out = score below the threshold. Share: clustered bootstrap"
        " by woman; cancers and false omission rate (FOR): Clopper-Pearson exact. Largest "
        f"share ruled out with no cancer among them: "
        f"{ro['largest_share_without_missed_cancer']:.1%}.</p>"
        + _img(written[0], "rule-out curves") + ro_table
        + "<h2>Reading order</h2>"
        f"<p>{cap['readers']} readers x {_num(cap['reads_per_hour'], 0)} reads/hour, "
        f"{_num(cap['day_start'], 1)}-{_num(cap['day_end'], 1)} h"
        f"{' on weekdays' if cap['weekdays_only'] else ' every day'} "
        f"({cap['reads_per_day']} reads per working day). Arrivals: {escape(arr['pattern'])}"
        + (f", {_num(arr['per_hour'], 1)}/hour while open" if "per_hour" in arr else "")
        + (f", {arr['per_day']} per day at {_num(arr['at_hour'], 1)} h" if "per_day" in arr
           else "")
        + f"; {order['exams_per_arrival_day']:.0f} exams per arrival day. Wait ceiling: "
        f"{_num(order['ceiling_hours'], 1)} h. Turnaround = end of read minus arrival, "
        "wall-clock hours (nights and weekends included).</p>"
        + _img(written[1], "turnaround distributions")
        + _table(("ordering", "exams", "n", "mean h", "median h", "p95 h", "max h",
                  "abnormal mean vs FIFO"), tat_rows)
    )
    html = _page("Triage simulation", [model], _sim_data(table), body)
    written.append(write_json(out / "simulate.json", {**result, "model": model,
                                                     "data": _sim_data(table)}))
    (out / "simulate.html").write_text(html, encoding="utf-8")
    return [*written, out / "simulate.html"]


def _sim_data(table: ScoreTable) -> dict[str, int]:
    return data_summary(table)


# --- monitor --------------------------------------------------------------------------------


def monitor_outputs(
    result: dict[str, Any], table: ScoreTable, model: dict[str, Any], out: Path
) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    png = plots.monitor(result["weeks"], out / "monitor.png", model.get("notice"))
    alerts = result["alerts"]
    rows = [(w["vendor"], w["week"], w["n"], _num(w["mean"]), _num(w["median"]),
             _num(w["q05"]), _num(w["q95"]), _num(w["psi"]), _num(w["ks"]),
             "n/a" if w["ks_p"] is None else f"{w['ks_p']:.2g}", w["flag"])
            for w in result["weeks"]]
    body = (
        f"<h2>Drift</h2><p>{len(alerts)} vendor-weeks with PSI &ge; 0.1 (moderate) or &ge; 0.25 "
        "(shift) against the reference window (each vendor's first "
        f"{result['settings']['reference_weeks']} weeks unless a date was given).</p>"
        + _img(png, "weekly score distribution and PSI")
        + _table(("vendor", "week", "n", "mean", "median", "q05", "q95", "PSI", "KS", "KS p",
                  "flag"), rows)
    )
    data = {"rows": len(table), "women": table.n_women, "weeks": len({w["week"] for w in
                                                                        result["weeks"]})}
    html = _page("Score monitoring", [model], data, body)
    written = [png, write_json(out / "monitor.json", {**result, "model": model, "data": data})]
    (out / "monitor.html").write_text(html, encoding="utf-8")
    return [*written, out / "monitor.html"]
