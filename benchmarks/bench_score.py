"""Scoring speed: model forward vs the full scorer, per-exam latency, preprocessing per core.

Printed side by side in one run (medians of ``--rounds``), for two models:

- ``b0@1024x832``: EfficientNetBN-b0 (random init, pretrained=False) at 1024 x 832, the issue's
  baseline (0.75 images/s at batch 4 on this 2-core CPU, torch 2.13 / MONAI 1.6);
- ``demo``: the synthetic demo model (``synthetic/demo_model.py``; trained first if absent).

Rows: ``forward bN``: a plain ``model(x)`` on ready tensors, batch N (the reference);
``scorer``: ``Scorer.score_exams`` from DICOM files on disk (full-size 4096 x 3328 synthetic
mammograms, 4 exams = 16 views, batch 16), preprocessing included, and its ratio to ``forward b16``
(the pipeline's overhead); ``exam latency``: one 4-view exam through ``score_exam``, preprocessing
included; ``preprocess/core``: ``preprocess`` alone in a process pinned to one core, uncompressed
and JPEG 2000 lossless.

    .venv/bin/python benchmarks/bench_score.py                      # CPU, 3 rounds
    .venv/bin/python benchmarks/bench_score.py --device cuda --rounds 5
    .venv/bin/python benchmarks/bench_score.py --quick              # smaller, for a smoke run
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless

from synthetic.exam import make_exam
from synthetic.identity import default_identity
from workers.score.card import (
    Architecture,
    InputSize,
    ModelCard,
    Network,
    Output,
    Thresholds,
    load_card,
)
from workers.score.infer import ExamInput, Scorer
from workers.score.models import build_network, load_model, save_model
from workers.score.preprocess import preprocess

BASELINE_B0 = 0.75  # images/s, issue 9, batch 4, this CPU


def b0_folder(root: Path, rows: int, cols: int) -> Path:
    card = ModelCard(
        name="bench-b0", version="1", device_uid="2.25.1", synthetic_demo=False,
        weights={"file": "model.pt", "sha256": "0" * 64},  # type: ignore[arg-type]
        architecture=Architecture(kind="monai", network=Network.EfficientNetBN,
                                  kwargs={"model_name": "efficientnet-b0"},
                                  input=InputSize(rows=rows, cols=cols)),
        output=Output(meaning="benchmark only: random initialisation"),
        thresholds=Thresholds(likely_normal_below=0.3, priority_at_or_above=0.7),
        intended_use="speed benchmark only, random weights",
        training_data="none: random initialisation (seed 0)")
    torch.manual_seed(0)
    save_model(build_network(card.architecture, card.output), card, root / "b0")
    return root / "b0"


def write_exams(root: Path, n: int, full: bool,
                ts: str = ExplicitVRLittleEndian) -> list[ExamInput]:
    out = []
    for i in range(n):
        folder = root / f"exam{i}-{ts[-2:]}"
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for ds in make_exam(identity=default_identity(900 + i), full_size=full,
                            transfer_syntax=ts):
            p = folder / f"{ds.SOPInstanceUID}.dcm"
            ds.save_as(p, enforce_file_format=True)
            paths.append(p)
        out.append(ExamInput(f"exam{i}", paths))
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def forward_ips(scorer: Scorer, batch: int, rounds: int) -> float:
    size = scorer.card.architecture.input
    x = np.random.default_rng(0).normal(0, 1, (batch, size.rows, size.cols)).astype(np.float32)
    scorer.forward(x)  # warm-up
    times = []
    for _ in range(rounds):
        _sync(scorer.model.device)
        t = time.perf_counter()
        scorer.forward(x)
        _sync(scorer.model.device)
        times.append(time.perf_counter() - t)
    return batch / statistics.median(times)


def scorer_ips(scorer: Scorer, exams: list[ExamInput], rounds: int) -> float:
    list(scorer.score_exams(exams[:1]))  # warm-up
    views = sum(len(e.views) for e in exams)
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        results = list(scorer.score_exams(exams))
        times.append(time.perf_counter() - t)
        assert all(r.score is not None for r in results)
    return views / statistics.median(times)


def exam_latency(scorer: Scorer, exam: ExamInput, rounds: int) -> float:
    scorer.score_exam(exam)
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        scorer.score_exam(exam)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _pinned_preprocess(paths: list[str], card_dir: str, rounds: int, q: mp.Queue) -> None:
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    card = load_card(Path(card_dir))
    per = []
    for _ in range(rounds):
        t = time.perf_counter()
        for p in paths:
            preprocess(pydicom.dcmread(p), card.preprocessing, card.architecture.input)
        per.append((time.perf_counter() - t) / len(paths))
    q.put(1.0 / statistics.median(per))


def preprocess_per_core(exams: list[ExamInput], card_dir: Path, rounds: int) -> float:
    ctx = mp.get_context("spawn")
    q: mp.Queue = ctx.Queue()
    paths = [str(p) for e in exams for p in e.views]
    proc = ctx.Process(target=_pinned_preprocess, args=(paths, str(card_dir), rounds, q))
    proc.start()
    value = float(q.get(timeout=3600))
    proc.join()
    return value


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--home", type=Path, default=Path("/var/tmp/deidgate-bench"),
                    help="data folder holding (or receiving) the demo model")
    ap.add_argument("--quick", action="store_true", help="small images and 1 exam")
    a = ap.parse_args()
    if a.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device here", file=sys.stderr)
        return 2
    from synthetic.demo_model import ensure_demo_model

    demo = ensure_demo_model(a.home, progress=sys.stderr.isatty())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {a.device}"
          + (f" ({torch.cuda.get_device_name()})" if a.device == "cuda" else "")
          + f", CPUs {len(os.sched_getaffinity(0))}; demo model "
          + ("trained now" if demo.trained else "cached"), flush=True)
    with tempfile.TemporaryDirectory(dir="/dev/shm" if Path("/dev/shm").is_dir() else None) as tmp:
        root = Path(tmp)
        rows, cols = (256, 208) if a.quick else (1024, 832)
        n_exams = 1 if a.quick else 4
        exams = write_exams(root / "u", n_exams, full=not a.quick)
        j2k = write_exams(root / "j", 1, full=not a.quick, ts=JPEG2000Lossless)
        models = {f"b0@{rows}x{cols}": b0_folder(root, rows, cols), "demo": demo.folder}
        table: dict[str, dict[str, str]] = {}
        for label, folder in models.items():
            model = load_model(folder, a.device)
            col = table.setdefault(label, {})
            size = model.card.architecture.input
            col["input"] = f"{size.rows}x{size.cols}"
            ips = {}
            for b in (1, 4, 16):
                ips[b] = forward_ips(Scorer(model, batch_size=b), b, a.rounds)
                col[f"forward b{b} (img/s)"] = f"{ips[b]:.2f}"
            s = scorer_ips(Scorer(model, batch_size=16, workers=2), exams, a.rounds)
            col["scorer b16 (img/s)"] = f"{s:.2f}"
            col["scorer / forward b16"] = f"{s / ips[16]:.2f}"
            lat = exam_latency(Scorer(model, batch_size=4, workers=2), exams[0], a.rounds)
            col["exam latency (s)"] = f"{lat:.2f}"
            col["exams/hour (latency)"] = f"{3600 / lat:.0f}"
            plain = preprocess_per_core(exams[:1], folder, a.rounds)
            col["preprocess/core uncompressed"] = f"{plain:.2f}"
            col["preprocess/core j2k-lossless"] = f"{preprocess_per_core(j2k, folder, 1):.2f}"
            print(f"  measured {label}", flush=True)
    labels = list(table)
    keys = list(table[labels[0]])
    width = max(len(k) for k in keys) + 2
    print(f"\n{'':<{width}}" + "".join(f"{x:>18}" for x in labels))
    for k in keys:
        print(f"{k:<{width}}" + "".join(f"{table[x][k]:>18}" for x in labels))
    print(f"\nissue 9 baseline: EfficientNetBN-b0 1024x832 batch 4 on this CPU = {BASELINE_B0} "
          "img/s;"
          f" images are {'256x208-source' if a.quick else '4096x3328'} synthetic mammograms; "
          f"medians of {a.rounds} rounds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
