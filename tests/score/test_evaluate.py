"""evaluate's pieces: what it reads from a model card, subgroups, the figures' structure."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from synthetic.scores import synthetic_scores
from workers.score import stats
from workers.score.evaluate import (
    DEMO_NOTICE,
    CardError,
    ModelInfo,
    evaluate,
    model_info_from_card,
    subgroup_masks,
)
from workers.score.table import ScoresFileError, ScoreTable

# the shape of workers/score/card.py's card (fields the reports do not need included)
CARD = """\
schema_version: 1
name: demo-effnet
version: 0.1.0
device_uid: 2.25.1234
synthetic_demo: true
weights: {file: model.pt, sha256: "%s"}
architecture: {network: efficientnet-b0, input_size: {height: 1024, width: 832}}
output: {activation: sigmoid, index: 0}
thresholds: {likely_normal_below: 0.1, priority_at_or_above: 0.6}
intended_use: "synthetic demo model, not for clinical use"
training_data: "synthetic mammograms with synthetic lesions"
""" % ("0" * 64)


def test_card_fields_the_reports_need(tmp_path: Path) -> None:
    (tmp_path / "card.yaml").write_text(CARD, encoding="utf-8")
    info = model_info_from_card(tmp_path)  # a model folder means its card.yaml
    assert info == ModelInfo("demo-effnet", "0.1.0",
                             {"likely_normal_below": 0.1, "priority_at_or_above": 0.6},
                             DEMO_NOTICE)
    clinical = CARD.replace("synthetic_demo: true", "synthetic_demo: false").replace(
        "synthetic demo model, not for clinical use", "screening triage, site validated")
    (tmp_path / "c.yaml").write_text(clinical, encoding="utf-8")
    assert model_info_from_card(tmp_path / "c.yaml").notice is None


@pytest.mark.parametrize(("text", "expected"), [
    ("version: 1\n", "needs 'name' and 'version'"),
    ("name: x\nversion: 1\nthresholds: [0.1]\n", "'thresholds' must be a mapping"),
    ("name: x\nversion: 1\nthresholds: {a: high}\n", "threshold 'a' must be a number"),
    ("name: [x\n", "cannot be read (ParserError)"),
])
def test_bad_cards(tmp_path: Path, text: str, expected: str) -> None:
    (tmp_path / "card.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(CardError, match=re.escape(expected)) as exc:
        model_info_from_card(tmp_path / "card.yaml")
    assert exc.value.code == "model-card-invalid"


def test_subgroups_cover_every_row_once_per_dimension() -> None:
    t = synthetic_scores(800, seed=1)
    groups = subgroup_masks(t)
    for dim in ("vendor", "age", "density"):
        masks = [m for d, _, m in groups if d == dim]
        assert np.array_equal(np.sum(masks, axis=0), np.ones(len(t)))


def test_evaluate_figures_match_direct_computation() -> None:
    t = synthetic_scores(1200, seed=2, second_model=True)
    info = ModelInfo("m", "1", {"t": 0.1})
    res = evaluate(t, [("score", info), ("b", ModelInfo("w", "1"))], n_boot=1000, seed=3)
    assert t.label is not None
    m = res["models"][0]
    assert m["auc"]["estimate"] == pytest.approx(stats.auc(t.score(), t.label))
    vendor_a = next(s for s in m["subgroups"] if s["group"] == "vendor-A")
    mask = t.vendor == "vendor-A"
    assert vendor_a["rows"] == int(mask.sum())
    assert vendor_a["auc"]["estimate"] == pytest.approx(stats.auc(t.score()[mask],
                                                                  t.label[mask]))
    d = res["comparison"]["delong"]
    assert d["difference"] == pytest.approx(m["auc"]["estimate"]
                                            - res["models"][1]["auc"]["estimate"])
    assert res["data"] == {"rows": len(t), "exams": len(t), "women": 1200,
                           "cancers": int(t.label.sum()),
                           "non_cancers": len(t) - int(t.label.sum()), "vendors": 3}


def test_evaluate_needs_both_classes() -> None:
    t = ScoreTable(exam=np.array(["1", "2"]), woman=np.array(["a", "b"]),
                   scores={"score": np.array([0.1, 0.2])}, label=np.array([0, 0], np.int8))
    with pytest.raises(ScoresFileError, match="needs both cancers"):
        evaluate(t, [("score", ModelInfo("m", "1"))], n_boot=1000)
