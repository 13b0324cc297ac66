"""The demo model learns the synthetic task: held-out women (never in training) reach exam AUC
>= 0.9; it is cached and reused; its card and display name say what it is."""

from __future__ import annotations

from pathlib import Path

import pytest

from synthetic.demo_model import (
    HELD_OUT_START,
    TRAIN_WOMEN,
    demo_model_dir,
    ensure_demo_model,
    held_out_exams,
)
from workers.score.card import DEMO_NOTICE, load_card
from workers.score.infer import ExamInput, Scorer
from workers.score.models import load_model
from workers.score.train import auc


@pytest.mark.timeout(1800)  # the session fixture trains the demo model (minutes)
def test_demo_model_reaches_auc_0_9_on_held_out_women(demo_home: Path) -> None:
    assert TRAIN_WOMEN.stop <= HELD_OUT_START
    exams = held_out_exams(160)
    assert 50 < sum(e.cancer for e in exams) < 110
    scorer = Scorer(load_model(demo_model_dir(demo_home)), batch_size=16, workers=2)
    results = list(scorer.score_exams(ExamInput(e.study_uid, [v.dataset for v in e.views])
                                      for e in exams))
    value = auc([r.score for r in results], [int(e.cancer) for e in exams])
    print(f"\nheld-out exam AUC of the demo model: {value:.3f}")
    assert value >= 0.9
    assert all(r.complete and r.model.synthetic_demo for r in results)
    assert {r.category for r in results} >= {"likely_normal", "priority"}


@pytest.mark.timeout(1800)
def test_demo_model_is_cached_and_labelled(demo_home: Path) -> None:
    folder = demo_model_dir(demo_home)
    before = (folder / "model.pt").stat().st_mtime_ns
    again = ensure_demo_model(demo_home)
    assert not again.trained and again.folder == folder
    assert (folder / "model.pt").stat().st_mtime_ns == before
    card = load_card(folder)
    assert card.synthetic_demo and DEMO_NOTICE in card.intended_use
    assert card.display_name.endswith(f"({DEMO_NOTICE})")
    assert "Synthetic mammograms with synthetic lesions" in card.training_data
    assert (folder / "train_log.jsonl").is_file()
