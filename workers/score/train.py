"""``deidgate model train``: fine-tune a MONAI network on de-identified output plus labels.

Input: a folder of de-identified DICOM files (searched recursively) and a labels CSV with the
columns ``study_uid,label`` (pseudonymous Study Instance UID; 1 = cancer) and optionally
``laterality`` (L/R: the breast with the finding; its views get the label, the other breast's
views 0; blank: every view of the study gets the label).

Rules that keep the validation figure honest:

- **the validation split is by woman** (the pseudonymous Patient ID), never by image or exam:
  a woman's other views and earlier exams would otherwise leak her breast into training;
- views are preprocessed exactly as the scorer will (the card's preprocessing, same code);
- the best epoch is chosen on the exam-level AUC (aggregated by the card's rule), the figure the
  worklist depends on.

Per epoch: a rich progress bar, a JSON line in ``train_log.jsonl`` (losses, AUCs, images/s) and a
checkpoint (``checkpoints/last.pt``, and ``best.pt``); ``resume=True`` continues from ``last.pt``.
The result is a model folder (``OUT/model``: card.yaml + model.pt) whose card carries the weights'
sha256 and a Device UID derived from them. Past one GPU, each process runs this module's
``main`` under torchrun: ``torchrun --nproc-per-node N -m workers.score.train DATA LABELS OUT``
(see ``workers.score.ddp``).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from workers.score import ddp
from workers.score.aggregate import aggregate
from workers.score.card import (
    DEMO_NOTICE,
    Aggregation,
    Architecture,
    InputSize,
    ModelCard,
    Network,
    Output,
    Preprocessing,
    Thresholds,
)
from workers.score.ddp import DistContext
from workers.score.models import build_network, save_model
from workers.score.preprocess import PreprocessError, preprocess, view_info


class TrainError(ValueError):
    """Bad training input (labels, data); the message names the file and line."""


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "site-model"
    version: str = "1"
    network: Network = Network.ResNet
    kwargs: dict[str, Any] = Field(default_factory=lambda: {
        "block": "basic", "layers": [1, 1, 1, 1], "block_inplanes": [16, 32, 64, 128],
        "conv1_t_size": 5, "conv1_t_stride": 2})
    rows: int = 256
    cols: int = 208
    preprocessing: Preprocessing = Field(default_factory=Preprocessing)
    aggregation: Aggregation = Field(default_factory=Aggregation)
    epochs: int = Field(default=8, ge=1)
    batch_size: int = Field(default=16, ge=1)
    lr: float = 3e-3
    weight_decay: float = 1e-4
    val_fraction: float = Field(default=0.2, gt=0, lt=1)
    seed: int = 0
    workers: int = 2
    augment: bool = True
    device: str = "auto"
    threads: int | None = None
    synthetic_demo: bool = False
    intended_use: str = "Triage ordering of screening mammography exams at the site that " \
                        "trained it; research use until validated locally."
    output_meaning: str = "Probability-like suspicion of malignancy per view (sigmoid of one " \
                          "logit); the exam score aggregates views per the card."


@dataclass(frozen=True)
class ViewRecord:
    path: Path
    study_uid: str
    patient_id: str
    laterality: str | None
    label: int


@dataclass
class TrainResult:
    model_dir: Path
    card: ModelCard
    best_val_auc: float
    best_epoch: int
    val_women: frozenset[str]
    train_women: frozenset[str]
    val_studies: frozenset[str]
    train_studies: frozenset[str]
    log: list[dict[str, float]]


def auc(scores: np.ndarray | list[float], labels: np.ndarray | list[int]) -> float:
    """ROC AUC as the Mann-Whitney U statistic (midranks for ties)."""
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def read_labels(path: Path) -> dict[str, tuple[int, str | None]]:
    out: dict[str, tuple[int, str | None]] = {}
    with Path(path).open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"study_uid", "label"} <= set(reader.fieldnames):
            raise TrainError(f"{path}:1: the header must name study_uid and label")
        for row in reader:
            line = reader.line_num
            uid, raw = (row.get("study_uid") or "").strip(), (row.get("label") or "").strip()
            lat = (row.get("laterality") or "").strip().upper() or None
            if not uid or raw not in ("0", "1") or lat not in (None, "L", "R"):
                raise TrainError(f"{path}:{line}: need a study_uid, label 0/1, "
                                 "laterality L/R/blank")
            if uid in out:
                raise TrainError(f"{path}:{line}: study_uid listed twice")
            out[uid] = (int(raw), lat)
    return out


def scan(data: Path, labels: dict[str, tuple[int, str | None]]) -> list[ViewRecord]:
    """Labelled views (headers only); unlabelled studies are left out."""
    records = []
    for path in sorted(Path(data).rglob("*.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        info = view_info(ds)
        if info.study_uid not in labels:
            continue
        label, lesion_side = labels[info.study_uid]
        view_label = label if lesion_side is None or info.laterality == lesion_side else 0
        records.append(ViewRecord(path, info.study_uid, info.patient_id, info.laterality,
                                  view_label))
    if not records:
        raise TrainError(f"{data}: no DICOM file of a labelled study")
    return records


def split_by_woman(patient_ids: set[str] | list[str], val_fraction: float,
                   seed: int) -> tuple[frozenset[str], frozenset[str]]:
    """(train women, validation women): a keyed hash orders the women, so the split is the same
    on every rank and every run, and no woman is on both sides."""
    women = sorted(set(patient_ids),
                   key=lambda p: hashlib.sha256(f"{seed}\0{p}".encode()).hexdigest())
    n_val = min(len(women) - 1, max(1, round(val_fraction * len(women))))
    if n_val < 1:
        raise TrainError("need at least two women to split")
    return frozenset(women[n_val:]), frozenset(women[:n_val])


def _prepare_all(records: list[ViewRecord], cfg: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    size = InputSize(rows=cfg.rows, cols=cfg.cols)

    def one(r: ViewRecord) -> np.ndarray | None:
        try:
            return preprocess(pydicom.dcmread(r.path), cfg.preprocessing, size).pixels
        except PreprocessError:
            return None

    with ThreadPoolExecutor(cfg.workers) as pool:
        arrays = list(pool.map(one, records))
    keep = np.array([a is not None for a in arrays])
    stack = np.stack([a for a in arrays if a is not None]).astype(np.float32)
    return stack, keep


def _evaluate(net: nn.Module, x: torch.Tensor, y: np.ndarray, recs: list[ViewRecord],
              rule: Aggregation, device: torch.device
              ) -> tuple[dict[str, float], list[float], list[int]]:
    """Validation loss, view and exam AUC; and the exam scores/labels (for the thresholds)."""
    net.eval()
    scores = []
    with torch.inference_mode():
        for i in range(0, len(x), 32):
            scores.append(torch.sigmoid(net(x[i : i + 32].to(device))).flatten().cpu())
    s = torch.cat(scores).numpy().astype(np.float64)
    loss = float(nn.functional.binary_cross_entropy(torch.from_numpy(s).clamp(1e-7, 1 - 1e-7),
                                                    torch.from_numpy(y.astype(np.float64))))
    exams: dict[str, list[tuple[str | None, float]]] = {}
    exam_y: dict[str, int] = {}
    for r, v, lab in zip(recs, s, y, strict=True):
        exams.setdefault(r.study_uid, []).append((r.laterality, float(v)))
        exam_y[r.study_uid] = max(exam_y.get(r.study_uid, 0), int(lab))
    uids = sorted(exams)
    exam_s = [aggregate(exams[u], rule) for u in uids]
    exam_l = [exam_y[u] for u in uids]
    return ({"val_loss": loss, "val_auc_view": auc(s, y), "val_auc_exam": auc(exam_s, exam_l)},
            exam_s, exam_l)


def thresholds_from(scores: list[float], labels: list[int]) -> Thresholds:
    """Likely-normal below the 5th percentile of cancers' exam scores; priority from the 90th
    percentile of the normals' (validation set; a site re-derives them with ``evaluate``)."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    lo = float(np.quantile(pos, 0.05)) if pos else 0.1
    hi = float(np.quantile(neg, 0.90)) if neg else 0.6
    lo, hi = min(lo, hi), max(lo, hi)
    if hi - lo < 1e-3:
        lo, hi = max(0.0, lo - 0.01), min(1.0, hi + 0.01)
    return Thresholds(likely_normal_below=round(lo, 4), priority_at_or_above=round(hi, 4))


def train(data: Path, labels_csv: Path, out: Path, cfg: TrainConfig | None = None, *,
          dist_ctx: DistContext | None = None, progress: bool = True,
          resume: bool = False) -> TrainResult:
    cfg = cfg or TrainConfig()
    out = Path(out)
    main = dist_ctx is None or dist_ctx.is_main
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if cfg.device == "auto" else cfg.device))
    if dist_ctx is not None:
        device = ddp.init(dist_ctx, device)
    torch.manual_seed(cfg.seed)
    records = scan(data, read_labels(labels_csv))
    train_w, val_w = split_by_woman([r.patient_id for r in records], cfg.val_fraction, cfg.seed)
    pixels, keep = _prepare_all(records, cfg)
    records = [r for r, k in zip(records, keep, strict=True) if k]
    is_val = np.array([r.patient_id in val_w for r in records])
    y_all = np.array([r.label for r in records], dtype=np.float32)
    x_train = torch.from_numpy(pixels[~is_val])[:, None]
    x_val = torch.from_numpy(pixels[is_val])[:, None]
    y_train, y_val = torch.from_numpy(y_all[~is_val])[:, None], y_all[is_val]
    val_recs = [r for r, v in zip(records, is_val, strict=True) if v]

    arch = Architecture(kind="monai", network=cfg.network, kwargs=cfg.kwargs,
                        input=InputSize(rows=cfg.rows, cols=cfg.cols))
    output = Output(meaning=cfg.output_meaning)
    net = build_network(arch, output).to(device)
    model: nn.Module = ddp.wrap(net, device) if dist_ctx is not None else net
    pos = float(y_train.sum())
    pos_weight = torch.tensor([(len(y_train) - pos) / max(pos, 1.0)], device=device)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = -(-len(ddp.shard(np.arange(len(x_train)), dist_ctx)) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps)
    ckpt_dir = out / "checkpoints"
    log_path = out / "train_log.jsonl"
    start, best_auc, best_epoch, best_state = 0, -1.0, -1, None
    best_thresholds = Thresholds(likely_normal_below=0.1, priority_at_or_above=0.6)
    if main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
    if resume and (ckpt_dir / "last.pt").is_file():
        ck = torch.load(ckpt_dir / "last.pt", map_location=device, weights_only=True)
        net.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        if int(ck["sched"]["total_steps"]) == cfg.epochs * steps:
            sched.load_state_dict(ck["sched"])   # an interrupted run continues its schedule
        else:  # more epochs asked for: a fresh one-cycle over the epochs still to run
            remaining = max(1, (cfg.epochs - int(ck["epoch"]) - 1) * steps)
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr,
                                                        total_steps=remaining)
        start, best_auc, best_epoch = int(ck["epoch"]) + 1, float(ck["best_auc"]), \
            int(ck["best_epoch"])
        best_thresholds = Thresholds(likely_normal_below=float(ck["thresholds"][0]),
                                     priority_at_or_above=float(ck["thresholds"][1]))
        if (ckpt_dir / "best.pt").is_file():
            best_state = torch.load(ckpt_dir / "best.pt", map_location="cpu", weights_only=True)
    log: list[dict[str, float]] = []
    bar = _progress(progress and main)
    gen = torch.Generator().manual_seed(cfg.seed)
    for epoch in range(start, cfg.epochs):
        gen.manual_seed(cfg.seed * 1000 + epoch)
        order = ddp.shard(torch.randperm(len(x_train), generator=gen).numpy(), dist_ctx)
        model.train()
        t0, total, seen = time.perf_counter(), 0.0, 0
        task = bar.add_task(f"epoch {epoch + 1}/{cfg.epochs}", total=steps) if bar else None
        for b in range(steps):
            idx = torch.from_numpy(order[b * cfg.batch_size : (b + 1) * cfg.batch_size])
            xb, yb = x_train[idx], y_train[idx]
            if cfg.augment:
                flip = torch.rand(len(xb), generator=gen) < 0.5
                xb = torch.where(flip[:, None, None, None], xb.flip(2), xb)
            xb, yb = xb.to(device), yb.to(device)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.item()) * len(xb)
            seen += len(xb)
            if bar and task is not None:
                bar.update(task, advance=1, description=f"epoch {epoch + 1}/{cfg.epochs} "
                           f"loss {total / seen:.4f}")
        ddp.sync_buffers(net, dist_ctx)
        seconds = time.perf_counter() - t0
        row: dict[str, Any] = {"epoch": epoch + 1,
                               "train_loss": ddp.mean_across(total / max(seen, 1), dist_ctx,
                                                             device),
                               "seconds": round(seconds, 3),
                               "images_per_s": round(seen / seconds * (dist_ctx.world_size
                                                     if dist_ctx else 1), 2)}
        metrics, exam_scores, exam_labels = _evaluate(net, x_val, y_val, val_recs,
                                                      cfg.aggregation, device)
        row.update(metrics)
        score = row["val_auc_exam"] if np.isfinite(row["val_auc_exam"]) else -row["val_loss"]
        if score > best_auc:
            best_auc, best_epoch = score, epoch + 1
            best_state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
            best_thresholds = thresholds_from(exam_scores, exam_labels)
            if main:
                torch.save(best_state, ckpt_dir / "best.pt")
        if main:
            torch.save({"model": net.state_dict(), "opt": opt.state_dict(),
                        "sched": sched.state_dict(), "epoch": epoch, "best_auc": best_auc,
                        "best_epoch": best_epoch,
                        "thresholds": [best_thresholds.likely_normal_below,
                                       best_thresholds.priority_at_or_above]},
                       ckpt_dir / "last.pt")
            with log_path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")
        log.append(row)
    if bar:
        bar.stop()
    if best_state is None:
        raise TrainError("no epoch was trained (resume found a finished run?)")
    net.load_state_dict(best_state)
    n_pos_ex = len({r.study_uid for r in records if r.label})
    summary = (f"{len(train_w)} women / {len({r.study_uid for r in records})} exams / "
               f"{len(records)} views ({n_pos_ex} exams with cancer); validation: "
               f"{len(val_w)} women split by woman (seed {cfg.seed}); best epoch {best_epoch} of "
               f"{cfg.epochs}, validation exam AUC {best_auc:.3f}")
    if cfg.synthetic_demo:
        summary = f"Synthetic mammograms with synthetic lesions (synthetic/lesions.py): {summary}"
    intended = cfg.intended_use if not cfg.synthetic_demo or DEMO_NOTICE in cfg.intended_use \
        else f"{cfg.intended_use} ({DEMO_NOTICE})"
    draft = ModelCard(
        name=cfg.name, version=cfg.version, device_uid="2.25.0", synthetic_demo=cfg.synthetic_demo,
        weights={"file": "model.pt", "sha256": "0" * 64},  # type: ignore[arg-type]
        architecture=arch, preprocessing=cfg.preprocessing, output=output,
        thresholds=best_thresholds, aggregation=cfg.aggregation,
        intended_use=intended, training_data=summary)
    model_dir = out / "model"
    card = save_model(net, draft, model_dir) if main else draft
    ddp.barrier(dist_ctx)
    if dist_ctx is not None:
        digest = hashlib.sha256(b"".join(v.cpu().numpy().tobytes()
                                         for v in net.state_dict().values())).hexdigest()
        (out / f"rank-{dist_ctx.rank}.sha256").write_text(digest)
        ddp.barrier(dist_ctx)
        ddp.finish(dist_ctx)
    return TrainResult(model_dir, card, best_auc, best_epoch, val_w, train_w,
                       frozenset(r.study_uid for r in val_recs),
                       frozenset(r.study_uid for r, v in zip(records, is_val, strict=True)
                                 if not v), log)


def _progress(enabled: bool) -> Any:
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    bar = Progress("[progress.description]{task.description}", BarColumn(),
                   MofNCompleteColumn(), TimeElapsedColumn(), transient=False)
    bar.start()
    return bar


def main(argv: Sequence[str] | None = None) -> int:
    """One rank of a training run (torchrun sets the rank variables), or a single process."""
    ap = argparse.ArgumentParser(prog="python -m workers.score.train")
    ap.add_argument("data", type=Path)
    ap.add_argument("labels", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--config", type=Path, help="TrainConfig as JSON")
    a = ap.parse_args(argv)
    cfg = TrainConfig.model_validate_json(a.config.read_text()) if a.config else TrainConfig()
    ctx = DistContext.from_env(os.environ)   # the entry point: the one place reading them
    result = train(a.data, a.labels, a.out, cfg, dist_ctx=ctx, progress=False)
    if ctx is None or ctx.is_main:
        print(json.dumps({"model": str(result.model_dir), "val_auc": result.best_val_auc}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
