"""From view scores to an exam score, a category, and whether the exam was complete.

Written down once, because the worklist, the SR and the evaluation must agree on it:

- **aggregation** (card ``aggregation``): exam score = ``breasts`` over the breasts of
  (``views`` over that breast's views). The default, the max over breasts of the mean over views,
  lets one suspicious breast raise the exam while a single odd view is tempered by the breast's
  other view. Views without laterality form their own group (``U``) so they still count.
- **category** (card ``thresholds``): score < likely_normal_below: ``likely_normal``;
  score >= priority_at_or_above: ``priority``; otherwise ``standard``.
- **completeness** (card ``completeness``): the exam is complete when every required
  (laterality, view) pair is present among the views that can be scored; the default is the four
  standard screening views, R/L x CC/MLO. An incomplete exam is scored after a quiet period with
  what it has, and its result says which views were missing.

No torch here: the API and the worklist import it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from enum import StrEnum

from workers.score.card import Aggregation, Completeness, StandardView, Thresholds


class Category(StrEnum):
    likely_normal = "likely_normal"
    standard = "standard"
    priority = "priority"


def _reduce(values: Sequence[float], how: str) -> float:
    if not values:
        raise ValueError("nothing to aggregate")
    return max(values) if how == "max" else sum(values) / len(values)


def aggregate(views: Iterable[tuple[str | None, float]], rule: Aggregation) -> float:
    """Exam score from (laterality, view score) pairs by the card's rule."""
    breasts: dict[str, list[float]] = {}
    for lat, score in views:
        breasts.setdefault(lat or "U", []).append(float(score))
    per_breast = [_reduce(v, rule.views) for _, v in sorted(breasts.items())]
    return _reduce(per_breast, rule.breasts)


def categorise(score: float, t: Thresholds) -> Category:
    if score < t.likely_normal_below:
        return Category.likely_normal
    if score >= t.priority_at_or_above:
        return Category.priority
    return Category.standard


def missing_views(present: Iterable[tuple[str | None, str | None]],
                  gate: Completeness) -> list[StandardView]:
    """The required (laterality, view) pairs not among ``present``; empty means complete."""
    have = {(lat, view) for lat, view in present}
    return [v for v in gate.required if (v.laterality, v.view) not in have]


def is_complete(present: Iterable[tuple[str | None, str | None]], gate: Completeness) -> bool:
    return not missing_views(present, gate)
