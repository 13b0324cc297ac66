"""Exam aggregation, categories and the completeness gate follow the card."""

from __future__ import annotations

import pytest

from workers.score.aggregate import Category, aggregate, categorise, is_complete, missing_views
from workers.score.card import Aggregation, Completeness, StandardView, Thresholds


def test_max_over_breasts_of_mean_over_views() -> None:
    views = [("R", 0.1), ("R", 0.3), ("L", 0.9), ("L", 0.5)]
    assert aggregate(views, Aggregation()) == pytest.approx(0.7)          # max(0.2, 0.7)
    assert aggregate(views, Aggregation(views="max", breasts="max")) == pytest.approx(0.9)
    assert aggregate(views, Aggregation(views="mean", breasts="mean")) == pytest.approx(0.45)
    # a view without laterality is its own group, so it still counts
    assert aggregate([("R", 0.2), (None, 0.8)], Aggregation()) == pytest.approx(0.8)
    with pytest.raises(ValueError):
        aggregate([], Aggregation())


def test_categories_at_the_thresholds() -> None:
    t = Thresholds(likely_normal_below=0.2, priority_at_or_above=0.6)
    assert categorise(0.1999, t) is Category.likely_normal
    assert categorise(0.2, t) is Category.standard
    assert categorise(0.5999, t) is Category.standard
    assert categorise(0.6, t) is Category.priority


def test_completeness_gate_default_and_configured() -> None:
    four = [("R", "CC"), ("L", "CC"), ("R", "MLO"), ("L", "MLO")]
    assert is_complete(four, Completeness())
    missing = missing_views(four[:3], Completeness())
    assert [(m.laterality, m.view) for m in missing] == [("L", "MLO")]
    assert not is_complete([("R", "CC"), ("R", "CC"), ("L", "CC"), ("R", "MLO")], Completeness())
    cc_only = Completeness(required=[StandardView(laterality="R", view="CC"),
                                     StandardView(laterality="L", view="CC")])
    assert is_complete(four[:2], cc_only)
