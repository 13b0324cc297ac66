"""The scorer: identical input and model give identical scores; batches span exams; results are
typed and carry the model's identity; incomplete exams and unusable views say so."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset

from synthetic.lesions import make_lesion_dataset
from workers.score.aggregate import aggregate, categorise
from workers.score.card import load_card
from workers.score.infer import ExamInput, Scorer, pick_device, scorer_for_process
from workers.score.models import load_model


def _exams(n: int = 3, start: int = 500) -> list[ExamInput]:
    return [ExamInput(e.study_uid, [v.dataset for v in e.views])
            for e in make_lesion_dataset(range(start, start + n), seed=2, rows=256, cols=208)]


def test_identical_input_and_model_give_identical_scores(tiny_model: Path) -> None:
    exams = _exams()
    first = list(Scorer(load_model(tiny_model), batch_size=5, workers=2).score_exams(exams))
    second = list(Scorer(load_model(tiny_model), batch_size=5, workers=2).score_exams(exams))
    assert first == second
    assert len({r.score for r in first}) == 3   # and they are not all one number


def test_result_carries_identity_views_and_the_cards_rules(tiny_model: Path) -> None:
    card = load_card(tiny_model)
    [res] = list(Scorer(load_model(tiny_model), batch_size=16, workers=1).score_exams(_exams(1)))
    assert (res.model.name, res.model.version, res.model.sha256, res.model.device_uid) == \
        (card.name, card.version, card.weights.sha256, card.device_uid)
    assert res.preprocessing_version == "mammo-1"
    assert res.aggregation == "max over breasts of the mean over each breast's views"
    assert [(v.laterality, v.view) for v in res.views] == [("R", "CC"), ("L", "CC"),
                                                           ("R", "MLO"), ("L", "MLO")]
    assert all(v.score is not None and 0 <= v.score <= 1 for v in res.views)
    assert [v.flipped for v in res.views] == [True, False, True, False]
    assert res.score == pytest.approx(aggregate(((v.laterality, v.score) for v in res.views),
                                                card.aggregation))
    assert res.category == categorise(res.score, card.thresholds)
    assert res.complete and res.missing == ()


def test_batches_are_filled_across_exams_and_results_keep_order(tiny_model: Path) -> None:
    sizes: list[int] = []

    class Recording(Scorer):
        def forward(self, batch: np.ndarray) -> np.ndarray:
            sizes.append(len(batch))
            return super().forward(batch)

    exams = _exams(3)
    results = list(Recording(load_model(tiny_model), batch_size=5, workers=2,
                             prefetch=3).score_exams(exams))
    assert sizes == [5, 5, 2]
    assert [r.exam_id for r in results] == [e.exam_id for e in exams]


def test_incomplete_exam_and_unusable_views_are_reported(tiny_model: Path,
                                                        tmp_path: Path) -> None:
    exam = _exams(1)[0]
    views = list(exam.views)
    processing = views[3].copy()
    assert isinstance(processing, Dataset)
    processing.PresentationIntentType = "FOR PROCESSING"
    garbage = tmp_path / "broken.dcm"
    garbage.write_bytes(b"not a DICOM file at all")
    res = Scorer(load_model(tiny_model), workers=1).score_exam(
        ExamInput(exam.exam_id, [*views[:3], processing, garbage]))
    assert not res.complete and res.missing == ("L-MLO",)
    assert [v.skipped for v in res.views] == [None, None, None, "presentation-intent",
                                              "unreadable"]
    assert res.score is not None
    empty = Scorer(load_model(tiny_model), workers=1).score_exam(ExamInput("x", [garbage]))
    assert empty.score is None and empty.category is None and not empty.complete


def test_process_pool_scores_like_threads(tiny_model: Path, tmp_path: Path) -> None:
    exams = _exams(2, start=700)
    files = []
    for e in exams:
        paths = []
        for ds in e.views:
            assert isinstance(ds, Dataset)
            p = tmp_path / f"{ds.SOPInstanceUID}.dcm"
            ds.save_as(p, enforce_file_format=True)
            paths.append(p)
        files.append(ExamInput(e.exam_id, paths))
    threads = list(Scorer(load_model(tiny_model), workers=2).score_exams(files))
    procs = list(Scorer(load_model(tiny_model), workers=2, processes=True).score_exams(files))
    assert threads == procs


def test_one_model_load_per_process(tiny_model: Path) -> None:
    a = scorer_for_process(tiny_model, "cpu")
    b = scorer_for_process(tiny_model, "cpu", batch_size=4)
    assert a.model is b.model and b.batch_size == 4
    assert pick_device("auto").type in ("cpu", "cuda")
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            pick_device("cuda")
