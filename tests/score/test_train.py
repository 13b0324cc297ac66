"""Training: labels are checked, the validation split is by woman, checkpoints and a loss log are
written, a run resumes, and the result is a loadable model folder with a full card."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from synthetic.lesions import make_lesion_exam, write_lesion_dataset
from tests.score.conftest import TINY_KWARGS
from workers.score.card import load_card
from workers.score.models import load_model
from workers.score.train import TrainConfig, TrainError, auc, read_labels, split_by_woman, train


def tiny_config(**kw: object) -> TrainConfig:
    base = {"rows": 64, "cols": 52, "epochs": 2, "batch_size": 8, "kwargs": TINY_KWARGS,
            "val_fraction": 0.3, "workers": 2, "device": "cpu", "seed": 7}
    return TrainConfig.model_validate({**base, **kw})


@pytest.fixture(scope="module")
def small_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """8 women; women 0-3 also have a second, later exam."""
    exams = [make_lesion_exam(w, cancer=w % 2 == 1, rows=160, cols=130) for w in range(8)]
    exams += [make_lesion_exam(w, cancer=w % 2 == 0, exam=1, rows=160, cols=130)
              for w in range(4)]
    folder = tmp_path_factory.mktemp("train-data")
    return folder, write_lesion_dataset(folder, exams)


def test_auc_is_the_mann_whitney_statistic() -> None:
    rng = np.random.default_rng(0)
    s = np.round(rng.uniform(0, 1, 40), 1)           # many ties
    y = rng.integers(0, 2, 40)
    pairs = [(a, b) for a, b in itertools.product(s[y == 1], s[y == 0])]
    brute = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in pairs) / len(pairs)
    assert auc(s, y) == pytest.approx(brute)
    assert auc([0.1, 0.9], [0, 1]) == 1.0 and np.isnan(auc([0.1, 0.2], [1, 1]))


def test_split_is_by_woman_deterministic_and_disjoint() -> None:
    women = [f"P{i:03d}" for i in range(50)]
    train_w, val_w = split_by_woman(women * 3, 0.2, seed=1)   # three images each
    assert not train_w & val_w and train_w | val_w == set(women) and len(val_w) == 10
    assert split_by_woman(list(reversed(women)), 0.2, seed=1) == (train_w, val_w)
    assert split_by_woman(women, 0.2, seed=2)[1] != val_w


def test_labels_csv_errors_name_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "labels.csv"
    bad.write_text("study_uid,label\n1.2.3,1\n1.2.4,2\n")
    with pytest.raises(TrainError, match=r"labels.csv:3: need a study_uid, label 0/1"):
        read_labels(bad)
    bad.write_text("uid,label\n")
    with pytest.raises(TrainError, match=r":1: the header must name study_uid and label"):
        read_labels(bad)


def test_train_writes_log_checkpoints_and_a_model_folder_and_resumes(
        small_data: tuple[Path, Path], tmp_path: Path) -> None:
    data, labels = small_data
    result = train(data, labels, tmp_path / "run", tiny_config(), progress=False)
    # no woman, and so none of her exams, on both sides
    assert not result.val_women & result.train_women
    assert not result.val_studies & result.train_studies
    assert len(result.val_studies) + len(result.train_studies) == 12
    assert len(result.val_women) == 2
    log = [json.loads(x) for x in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]
    assert {"train_loss", "val_loss", "val_auc_view", "val_auc_exam", "images_per_s"} <= set(log[0])
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()
    assert (tmp_path / "run" / "checkpoints" / "best.pt").is_file()
    card = load_card(result.model_dir)
    assert card.architecture.network == "ResNet" and card.preprocessing.version == "mammo-1"
    assert "8 women" not in card.training_data and "6 women" in card.training_data
    assert "split by woman" in card.training_data
    assert card.thresholds.likely_normal_below < card.thresholds.priority_at_or_above
    loaded = load_model(result.model_dir)
    assert loaded.identity.device_uid == card.device_uid
    again = train(data, labels, tmp_path / "run", tiny_config(epochs=3), progress=False,
                  resume=True)
    log = (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in log] == [1, 2, 3] and len(again.log) == 1
