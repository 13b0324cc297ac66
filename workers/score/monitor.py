"""Score drift monitoring: per vendor and ISO week, is the score distribution still the one the
model was validated on?

A scanner replacement, a software upgrade or a new processing preset changes the pixels, and a
model can then score a whole vendor higher or lower without any change in the women screened.
Labels arrive months later (interval cancers, the next round), so drift is watched on the scores
alone. Per vendor (and for all vendors together) and per ISO week of ``arrival``:

- n, mean, standard deviation, and the 5/25/50/75/95% quantiles;
- the population stability index (PSI) against a reference window: the vendor's first
  ``reference_weeks`` weeks, or the exams before ``reference_until``. Bins are the reference's
  deciles (outer bins open-ended); empty bins are floored at 1e-4 so the logarithm exists.
  Conventional reading: < 0.1 stable, 0.1-0.25 moderate change, >= 0.25 shift;
- the two-sample Kolmogorov-Smirnov statistic and p-value (scipy), which does not depend on a
  binning but becomes "significant" for tiny shifts once weeks are large, so PSI, a size of
  change, is the one alerted on.

Weeks with fewer than ``min_n`` exams are reported but never alerted.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import stats as sps

from workers.score.table import ScoreTable

ALL = "(all vendors)"
_FLOOR = 1e-4


def iso_weeks(times: NDArray[np.datetime64]) -> NDArray[np.str_]:
    days = times.astype("datetime64[D]")
    uniq, inverse = np.unique(days, return_inverse=True)
    labels = []
    for d in uniq:
        y, w, _ = date.fromisoformat(str(d)).isocalendar()
        labels.append(f"{y}-W{w:02d}")
    return np.array(labels, dtype=np.str_)[inverse]


def psi(reference: NDArray[np.float64], current: NDArray[np.float64], bins: int = 10) -> float:
    """Population stability index of ``current`` against ``reference`` (decile bins)."""
    inner = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    ref = np.bincount(np.searchsorted(inner, reference, side="right"), minlength=inner.size + 1)
    cur = np.bincount(np.searchsorted(inner, current, side="right"), minlength=inner.size + 1)
    p = np.maximum(ref / ref.sum(), _FLOOR)
    q = np.maximum(cur / cur.sum(), _FLOOR)
    return float(np.sum((q - p) * np.log(q / p)))


def _describe(s: NDArray[np.float64]) -> dict[str, float]:
    q = np.quantile(s, [0.05, 0.25, 0.5, 0.75, 0.95])
    return {"mean": float(s.mean()), "sd": float(s.std(ddof=1)) if s.size > 1 else 0.0,
            "q05": float(q[0]), "q25": float(q[1]), "median": float(q[2]),
            "q75": float(q[3]), "q95": float(q[4])}


def flag(value: float) -> str:
    return "shift" if value >= 0.25 else "moderate" if value >= 0.1 else "stable"


def monitor(
    table: ScoreTable,
    *,
    reference_weeks: int = 4,
    reference_until: np.datetime64 | None = None,
    min_n: int = 30,
    score: str | None = None,
) -> dict[str, Any]:
    if reference_weeks < 1:
        raise ValueError("the reference window needs at least one week")
    times = table.need_arrival()
    weeks = iso_weeks(times)
    s = table.score(score)
    vendor = table.vendor if table.vendor is not None else np.full(len(table), "")
    groups: list[tuple[str, NDArray[np.bool_]]] = [(ALL, np.ones(len(table), dtype=bool))]
    names = sorted(set(vendor.tolist()))
    if len(names) > 1 or names != [""]:
        groups += [(v or "not recorded", vendor == v) for v in names]
    rows: list[dict[str, Any]] = []
    refs: dict[str, dict[str, Any]] = {}
    for name, mask in groups:
        in_ref = _reference(mask, weeks, times, reference_weeks, reference_until)
        ref = s[in_ref]
        refs[name] = {"n": int(ref.size), "weeks": sorted(set(weeks[in_ref].tolist()))}
        for wk in sorted(set(weeks[mask].tolist())):
            m = mask & (weeks == wk)
            cur = s[m]
            row: dict[str, Any] = {"vendor": name, "week": wk, "n": int(cur.size),
                                   "reference": bool(np.all(in_ref[m])), **_describe(cur)}
            if ref.size >= 2 and not row["reference"]:
                row["psi"] = psi(ref, cur)
                ks = sps.ks_2samp(ref, cur)
                row["ks"], row["ks_p"] = float(ks.statistic), float(ks.pvalue)
                row["flag"] = flag(row["psi"]) if cur.size >= min_n else "few exams"
            else:
                row["psi"] = row["ks"] = row["ks_p"] = None
                row["flag"] = "reference" if row["reference"] else "no reference"
            rows.append(row)
    alerts = [r for r in rows if r["flag"] in ("moderate", "shift")]
    return {"reference": refs, "weeks": rows, "alerts": alerts,
            "settings": {"reference_weeks": reference_weeks,
                         "reference_until": None if reference_until is None
                         else str(reference_until), "min_n": min_n,
                         "psi_bins": "reference deciles"}}


def _reference(
    mask: NDArray[np.bool_],
    weeks: NDArray[np.str_],
    times: NDArray[np.datetime64],
    reference_weeks: int,
    until: np.datetime64 | None,
) -> NDArray[np.bool_]:
    if until is not None:
        return mask & (times < until)
    first = sorted(set(weeks[mask].tolist()))[:reference_weeks]
    return mask & np.isin(weeks, first)
