"""``deidgate model evaluate``: one model, or two on the same exams, as JSON-ready figures.

What a screening programme needs before it trusts a score on its own data: discrimination with
an interval that respects women with several exams (AUC, clustered bootstrap; DeLong beside it),
the operating points it would actually use (sensitivity and specificity at the card's
thresholds), calibration, and the same figures per vendor, age band and breast density, since a
model that works on one scanner can fail on another. Every figure carries its n.

A threshold means "flag if score >= threshold". The card's thresholds are taken as given; no
threshold is tuned on the evaluation data.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from workers.score import stats
from workers.score.calibration import calibration
from workers.score.table import ScoresFileError, ScoreTable

DEMO_NOTICE = "synthetic demo model, not for clinical use"
AGE_BANDS = ((0, 50, "<50"), (50, 60, "50-59"), (60, 70, "60-69"), (70, 200, "70+"))
_MIN_FOR_AUC = 1  # a subgroup AUC needs at least one cancer and one non-cancer


class CardError(ScoresFileError):
    """The model card given to a toolkit command cannot be used (names the key, not values)."""

    code = "model-card-invalid"


@dataclass(frozen=True)
class ModelInfo:
    """What the report says about the model: from its card, or from the command line."""

    name: str
    version: str
    thresholds: dict[str, float] = field(default_factory=dict)
    notice: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "thresholds": self.thresholds,
                "notice": self.notice}


def _strings(node: object) -> Iterable[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for v in node.values():
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)


def model_info_from_card(path: Path) -> ModelInfo:
    """Name, version, thresholds and the demo notice from a model card YAML.

    Reads only the fields the reports need (``name``, ``version``, ``thresholds``: a mapping of
    name to number, such as ``likely_normal_below`` and ``priority_at_or_above``, and
    ``synthetic_demo``); a model folder means its ``card.yaml``. The card's full validation
    (hashes, preprocessing) belongs to workers.score.card when a model is loaded.
    """
    path = Path(path) / "card.yaml" if Path(path).is_dir() else Path(path)
    where = path.name
    try:
        card = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise CardError(f"model card {where}: cannot be read ({type(exc).__name__})"
                              ) from None
    if not isinstance(card, dict) or not card.get("name") or not card.get("version"):
        raise CardError(f"model card {where}: needs 'name' and 'version'")
    raw = card.get("thresholds", card.get("operating_thresholds", {})) or {}
    if not isinstance(raw, dict):
        raise CardError(f"model card {where}: 'thresholds' must be a mapping")
    thresholds: dict[str, float] = {}
    for key, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise CardError(f"model card {where}: threshold '{key}' must be a number")
        thresholds[str(key)] = float(value)
    demo = bool(card.get("synthetic_demo")) or any(
        "not for clinical use" in s.lower() for s in _strings(card))
    return ModelInfo(str(card["name"]), str(card["version"]), thresholds,
                     DEMO_NOTICE if demo else None)


def data_summary(table: ScoreTable) -> dict[str, int]:
    """Counts only: what the report may say about the data."""
    out = {"rows": len(table), "exams": int(np.unique(table.exam).size),
           "women": table.n_women}
    if table.label is not None:
        out["cancers"] = int(table.label.sum())
        out["non_cancers"] = int(len(table) - table.label.sum())
    if table.vendor is not None:
        out["vendors"] = int(np.unique(table.vendor[table.vendor != ""]).size)
    return out


def subgroup_masks(table: ScoreTable) -> list[tuple[str, str, np.ndarray]]:
    """(dimension, group, row mask) for vendor, age band and density, when recorded."""
    groups: list[tuple[str, str, np.ndarray]] = []
    if table.vendor is not None:
        for v in sorted(set(table.vendor.tolist())):
            groups.append(("vendor", v or "not recorded", table.vendor == v))
    if table.age is not None:
        for lo, hi, name in AGE_BANDS:
            groups.append(("age", name, (table.age >= lo) & (table.age < hi)))
        groups.append(("age", "not recorded", np.isnan(table.age)))
    if table.density is not None:
        for d in ("a", "b", "c", "d", ""):
            groups.append(("density", d or "not recorded", table.density == d))
    return [g for g in groups if g[2].any()]


def _one_model(
    table: ScoreTable, name: str, info: ModelInfo, n_boot: int, seed: int, bins: int
) -> dict[str, Any]:
    labels = table.need_label()
    scores = table.score(name)
    boot = stats.ClusterBootstrap(table.woman_codes(), n_boot, seed)
    res = stats.bootstrap_auc(scores, labels, boot)
    naive = stats.ClusterBootstrap(np.arange(len(table), dtype=np.intp), n_boot, seed)
    naive_samples = stats.bootstrap_auc_samples(scores, labels, naive)
    fpr, tpr, _ = stats.roc_points(scores, labels)
    keep = _thin(fpr.size, 2000)
    out: dict[str, Any] = {
        "column": name,
        "model": info.as_dict(),
        "auc": res.auc.as_dict(),
        "auc_exam_level_bootstrap": stats.percentile_interval(
            res.auc.estimate, naive_samples, stats.boot_label(naive) + " (ignores clustering)"
        ).as_dict(),
        "roc": {"fpr": fpr[keep].tolist(), "tpr": tpr[keep].tolist(),
                "points": "every ROC vertex" if keep.size == fpr.size else
                f"{keep.size} of {fpr.size} vertices, evenly spaced, ends kept",
                "band_fpr": res.fpr_grid.tolist(),
                "band_low": res.tpr_low.tolist(), "band_high": res.tpr_high.tolist()},
        "operating_points": [
            op.as_dict() for op in stats.operating_points(scores, labels, info.thresholds, boot)
        ],
        "calibration": calibration(scores, labels, bins).as_dict(),
        "subgroups": [],
    }
    try:
        out["auc_delong"] = stats.delong_interval(scores, labels).as_dict()
    except ValueError as exc:
        out["auc_delong"] = {"note": str(exc)}
    for dim, group, mask in subgroup_masks(table):
        out["subgroups"].append(_subgroup(table.subset(mask), name, dim, group, info,
                                          n_boot, seed))
    return out


def _thin(n: int, most: int) -> np.ndarray:
    """Indices of at most ``most`` evenly spaced ROC vertices, first and last kept: a 10^5-exam
    curve drawn or stored with every vertex is megabytes and looks the same."""
    if n <= most:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, most).round().astype(np.intp))


def _subgroup(
    sub: ScoreTable, name: str, dim: str, group: str, info: ModelInfo, n_boot: int, seed: int
) -> dict[str, Any]:
    labels = sub.need_label()
    scores = sub.score(name)
    n1 = int(labels.sum())
    row: dict[str, Any] = {"dimension": dim, "group": group, "rows": len(sub),
                           "women": sub.n_women, "cancers": n1, "non_cancers": len(sub) - n1}
    boot = stats.ClusterBootstrap(sub.woman_codes(), n_boot, seed)
    if n1 >= _MIN_FOR_AUC and len(sub) - n1 >= _MIN_FOR_AUC:
        row["auc"] = stats.bootstrap_auc(scores, labels, boot, grid_points=0).auc.as_dict()
    else:
        row["auc"] = None  # not estimable: the report says why (no cancers or no non-cancers)
    row["operating_points"] = [
        op.as_dict() for op in stats.operating_points(scores, labels, info.thresholds, boot)
    ]
    return row


def evaluate(
    table: ScoreTable,
    models: list[tuple[str, ModelInfo]],
    *,
    n_boot: int = 2000,
    seed: int = 0,
    bins: int = 10,
) -> dict[str, Any]:
    """Figures for one model, or two (score column name, info) on the same exams."""
    if not 1 <= len(models) <= 2:
        raise ValueError("evaluate compares one or two models")
    labels = table.need_label()
    if labels.sum() == 0 or labels.sum() == len(labels):
        raise ScoresFileError(f"{table.source}: needs both cancers (label 1) and non-cancers")
    result: dict[str, Any] = {
        "data": data_summary(table),
        "settings": {"bootstrap_resamples": n_boot, "seed": seed, "calibration_bins": bins,
                     "interval": "95%"},
        "models": [_one_model(table, col, info, n_boot, seed, bins) for col, info in models],
    }
    if len(models) == 2:
        result["comparison"] = compare(table, models[0][0], models[1][0], n_boot, seed)
    return result


def compare(table: ScoreTable, a: str, b: str, n_boot: int, seed: int) -> dict[str, Any]:
    """DeLong's paired test, and the clustered bootstrap of the same difference."""
    labels = table.need_label()
    sa, sb = table.score(a), table.score(b)
    boot = stats.ClusterBootstrap(table.woman_codes(), n_boot, seed)
    # the same seed: both models see the same resampled women, so the difference is paired
    diffs = (stats.bootstrap_auc_samples(sa, labels, boot)
             - stats.bootstrap_auc_samples(sb, labels, boot))
    estimate = stats.auc(sa, labels) - stats.auc(sb, labels)
    out: dict[str, Any] = {
        "models": [a, b],
        "bootstrap_difference": stats.percentile_interval(
            estimate, diffs, stats.boot_label(boot)).as_dict(),
    }
    try:
        out["delong"] = stats.delong_test(sa, sb, labels).as_dict()
    except ValueError as exc:
        out["delong"] = {"note": str(exc)}
    return out
