"""Synthetic lesions sit inside the breast, in both views of one breast, reproducibly, and no
one-number brightness rule finds them (the demo model's task is not trivial)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEGLSLossless

from synthetic.lesions import make_lesion_dataset, make_lesion_exam, write_lesion_dataset
from workers.score.train import auc


def test_cancer_exam_has_one_lesion_in_both_views_of_one_breast_inside_the_breast() -> None:
    for woman in range(6):
        ex = make_lesion_exam(woman, cancer=True)
        assert ex.laterality in ("L", "R")
        for v in ex.views:
            malignant = [x for x in v.lesions if x.malignant]
            assert v.label == int(v.laterality == ex.laterality)
            assert len(malignant) == v.label
            if v.label:
                assert v.lesion_mask.any()
                assert not (v.lesion_mask & ~v.breast_mask).any()  # never outside the breast
                assert v.breast_mask[malignant[0].row, malignant[0].col]
            else:
                assert not v.lesion_mask.any()


def test_normal_exams_have_only_benign_distractors() -> None:
    exams = [make_lesion_exam(w, cancer=False) for w in range(8)]
    kinds = {x.kind for e in exams for v in e.views for x in v.lesions}
    assert kinds <= {"speck", "cyst"} and kinds  # distractors occur, cancers do not
    assert all(v.label == 0 for e in exams for v in e.views)


def test_lesions_are_deterministic_and_change_the_pixels() -> None:
    a = make_lesion_exam(3, cancer=True)
    b = make_lesion_exam(3, cancer=True)
    plain = make_lesion_exam(3, cancer=False)
    for va, vb in zip(a.views, b.views, strict=True):
        assert np.array_equal(va.dataset.pixel_array, vb.dataset.pixel_array)
    assert a.study_uid == b.study_uid and a.patient_id == b.patient_id
    lesion_view = next(i for i, v in enumerate(a.views) if v.label)
    diff = a.views[lesion_view].dataset.pixel_array.astype(int) - \
        plain.views[lesion_view].dataset.pixel_array.astype(int)
    assert (diff[a.views[lesion_view].lesion_mask] > 0).mean() > 0.5
    later = make_lesion_exam(3, cancer=False, exam=1)
    assert later.patient_id == a.patient_id and later.study_uid != a.study_uid


def test_encodings_and_monochrome1_keep_the_image() -> None:
    m2 = make_lesion_exam(5, cancer=True)
    jls = make_lesion_exam(5, cancer=True, transfer_syntax=JPEGLSLossless,
                           photometric="MONOCHROME1")
    v2, v1 = m2.views[0].dataset, jls.views[0].dataset
    assert v1.file_meta.TransferSyntaxUID == JPEGLSLossless
    assert v1.PhotometricInterpretation == "MONOCHROME1"
    assert np.array_equal(v1.pixel_array.astype(int), 4095 - v2.pixel_array.astype(int))


def test_written_dataset_and_labels_csv(tmp_path: Path) -> None:
    exams = make_lesion_dataset(range(6), seed=0)
    labels = write_lesion_dataset(tmp_path, exams)
    rows = list(csv.DictReader(labels.open()))
    assert [r["study_uid"] for r in rows] == [e.study_uid for e in exams]
    assert [int(r["label"]) for r in rows] == [int(e.cancer) for e in exams]
    assert all((r["laterality"] in ("L", "R")) == (r["label"] == "1") for r in rows)
    files = sorted(tmp_path.rglob("*.dcm"))
    assert len(files) == 24
    assert all(f.stem == pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files)


def test_no_brightness_rule_reaches_auc_0_9() -> None:
    """Mean, 99th percentile and maximum of the breast pixels, max over the exam's views."""
    exams = make_lesion_dataset(range(200, 300), seed=0)
    labels = [int(e.cancer) for e in exams]
    assert 30 < sum(labels) < 70
    rules = {"mean": np.mean, "p99": lambda a: np.percentile(a, 99), "max": np.max}
    for name, rule in rules.items():
        scores = [max(float(rule(v.dataset.pixel_array[v.breast_mask])) for v in e.views)
                  for e in exams]
        value = auc(scores, labels)
        assert max(value, 1 - value) < 0.8, (name, value)


@pytest.mark.parametrize("woman", [0, 1])
def test_exam_has_the_four_standard_views(woman: int) -> None:
    ex = make_lesion_exam(woman, cancer=bool(woman))
    assert [(v.laterality, v.view) for v in ex.views] == [("R", "CC"), ("L", "CC"),
                                                          ("R", "MLO"), ("L", "MLO")]
