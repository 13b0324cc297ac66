"""`deidgate model ...` as an operator runs it: real processes, real model folders."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from synthetic.lesions import make_lesion_dataset, write_lesion_dataset
from tests.score.test_train import tiny_config
from workers.score.card import DEMO_NOTICE

DEIDGATE = [sys.executable, "-m", "service.cli.main"]


def run_cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEIDGATE_HOME": str(home)}
    env.pop("DEIDGATE_DATABASE_URL", None)
    return subprocess.run([*DEIDGATE, *args], env=env, capture_output=True, text=True,
                          timeout=600, check=False)


def test_card_validate_accepts_and_refuses(tiny_model: Path, tmp_path: Path) -> None:
    ok = run_cli(tmp_path, "model", "card", "validate", str(tiny_model))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("ok: tiny 1: monai ResNet 64x52, preprocessing mammo-1")
    bad = tmp_path / "bad"
    shutil.copytree(tiny_model, bad)
    (bad / "model.pt").write_bytes(b"other weights")
    res = run_cli(tmp_path, "model", "card", "validate", str(bad))
    assert res.returncode == 2 and "model-card-invalid" in res.stderr
    assert "do not match the card" in res.stderr
    assert run_cli(tmp_path, "model", "card", "validate", "--no-weights",
                   str(bad)).returncode == 0
    card = bad / "card.yaml"
    card.write_text(card.read_text().replace("synthetic_demo: false",
                                             "synthetic_demo: false\nsite: x"))
    res = run_cli(tmp_path, "model", "card", "validate", str(card))
    assert res.returncode == 2 and f"{card}:" in res.stderr and "site: Extra inputs" in res.stderr


def test_export_then_validate(tiny_model: Path, tmp_path: Path) -> None:
    res = run_cli(tmp_path, "model", "export", str(tiny_model), str(tmp_path / "ts"))
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "ts" / "model.ts").is_file()
    res = run_cli(tmp_path, "model", "card", "validate", str(tmp_path / "ts"))
    assert res.returncode == 0 and "torchscript ResNet 64x52" in res.stdout


def test_train_command(tmp_path: Path) -> None:
    data = tmp_path / "data"
    labels = write_lesion_dataset(data, make_lesion_dataset(range(6), seed=4, rows=160,
                                                            cols=130))
    cfg = tmp_path / "cfg.json"
    cfg.write_text(tiny_config(epochs=1).model_dump_json())
    res = run_cli(tmp_path, "model", "train", str(data), str(labels), str(tmp_path / "run"),
                  "--config", str(cfg), "--name", "site-x", "--version", "3")
    assert res.returncode == 0, res.stderr
    assert "validation women" in res.stdout
    res = run_cli(tmp_path, "model", "card", "validate", str(tmp_path / "run" / "model"))
    assert res.returncode == 0 and res.stdout.startswith("ok: site-x 3:")
    bad = tmp_path / "bad.csv"
    bad.write_text("study_uid,label\n1.2.3,yes\n")
    res = run_cli(tmp_path, "model", "train", str(data), str(bad), str(tmp_path / "r2"))
    assert res.returncode == 2 and "bad.csv:2:" in res.stderr


@pytest.mark.timeout(1800)  # may train the demo model first
def test_demo_command_reuses_the_cached_model_and_says_what_it_is(demo_home: Path) -> None:
    res = run_cli(demo_home, "model", "demo")
    assert res.returncode == 0, res.stderr
    assert "(cached)" in res.stdout and DEMO_NOTICE in res.stdout
