"""The scorer: views in, typed exam results out, with the model's identity on every result.

One model load per process (``scorer_for_process``). Views of many exams flow through one
pipeline so that batches are filled *across* exams:

    files -> preprocessing pool (threads or processes) -> bounded in-order window -> batches
          -> model (CUDA: autocast fp16/bf16, channels_last, pinned non-blocking copies) -> scores

The preprocessing pool keeps up to ``prefetch`` views in flight, so while the model runs a batch
the next batches are being decoded; the window is consumed in submission order, so batch
composition, and therefore every score, is the same on every run (identical input and model give
identical scores; tests/score/test_infer.py checks it on the CPU). A view that cannot be read or
preprocessed is skipped with a reason code; the exam is scored with the others and says so.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pydicom
import torch
from pydicom.dataset import Dataset

from workers.score.aggregate import Category, aggregate, categorise, missing_views
from workers.score.card import InputSize, ModelCard, Preprocessing
from workers.score.models import LoadedModel, ModelIdentity, load_model, scores_from_logits
from workers.score.preprocess import PreparedView, PreprocessError, preprocess, view_info


@dataclass(frozen=True)
class ExamInput:
    """One exam: an identifier (the pseudonymous study UID) and its view files or datasets."""

    exam_id: str
    views: Sequence[Path | Dataset]


@dataclass(frozen=True)
class ViewResult:
    sop_instance_uid: str
    laterality: str | None
    view: str | None
    score: float | None
    skipped: str | None = None          # reason code when not scored
    flipped: bool = False
    laterality_check: str = ""
    voi_source: str = ""


@dataclass(frozen=True)
class ExamResult:
    exam_id: str
    score: float | None                 # None: no view could be scored
    category: Category | None
    model: ModelIdentity
    preprocessing_version: str
    aggregation: str
    views: tuple[ViewResult, ...]
    complete: bool
    missing: tuple[str, ...]            # e.g. ("R-MLO",) when the gate found it absent


@dataclass(frozen=True)
class _Skip:
    sop_instance_uid: str
    laterality: str | None
    view: str | None
    reason: str


def _prepare(item: Path | Dataset, p: Preprocessing, size: InputSize,
             intents: tuple[str, ...], codes: tuple[str, ...]) -> PreparedView | _Skip:
    """Runs in the pool: read, select, preprocess; never raises for a bad view."""
    try:
        ds = item if isinstance(item, Dataset) else pydicom.dcmread(item)
    except Exception:  # unreadable file: any parser error
        return _Skip("", None, None, "unreadable")
    info = view_info(ds)
    if info.presentation_intent not in intents:
        return _Skip(info.sop_instance_uid, info.laterality, info.view, "presentation-intent")
    if info.view not in codes:
        return _Skip(info.sop_instance_uid, info.laterality, info.view, "view-not-scored")
    try:
        return preprocess(ds, p, size)
    except PreprocessError as exc:
        return _Skip(info.sop_instance_uid, info.laterality, info.view, exc.code)


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(requested)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("CUDA was asked for but is not available")
    return dev


class Scorer:
    def __init__(self, model: LoadedModel, *, batch_size: int = 16, workers: int | None = None,
                 processes: bool = False, prefetch: int | None = None, amp: bool = True) -> None:
        self.model = model
        self.card: ModelCard = model.card
        self.batch_size = batch_size
        self.workers = workers or max(1, min(8, (os.cpu_count() or 2) - 1))
        self.processes = processes
        self.prefetch = prefetch or max(2 * batch_size, 4 * self.workers)
        self.cuda = model.device.type == "cuda"
        self.amp = amp and self.cuda
        self.amp_dtype = torch.bfloat16 if self.cuda and torch.cuda.is_bf16_supported() \
            else torch.float16

    # ---------------------------------------------------------------- the model
    def forward(self, batch: np.ndarray) -> np.ndarray:
        """Scores for an (N, rows, cols) float32 batch of preprocessed views."""
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))[:, None]
        channels = self.card.architecture.input.channels
        if channels > 1:
            x = x.expand(-1, channels, -1, -1)
        if self.cuda:
            x = x.pin_memory().to(self.model.device, non_blocking=True)
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast(
                device_type=self.model.device.type, dtype=self.amp_dtype, enabled=self.amp):
            logits = self.model.module(x)
        return scores_from_logits(logits, self.card.output).cpu().numpy().astype(np.float64)

    # ---------------------------------------------------------------- the pipeline
    def _executor(self) -> Executor:
        if self.processes:
            return ProcessPoolExecutor(self.workers, mp_context=get_context("spawn"))
        return ThreadPoolExecutor(self.workers, thread_name_prefix="preprocess")

    def score_exams(self, exams: Iterable[ExamInput]) -> Iterator[ExamResult]:
        """Results in the order of ``exams``; each as soon as its last view is scored."""
        p, size = self.card.preprocessing, self.card.architecture.input
        intents = tuple(self.card.views.presentation_intents)
        codes = tuple(self.card.views.view_codes)
        order: deque[tuple[ExamInput, list[PreparedView | _Skip | None]]] = deque()
        scores: dict[int, float] = {}
        window: deque[tuple[list[PreparedView | _Skip | None], int, Future[PreparedView | _Skip]]]
        window = deque()
        batch: list[PreparedView] = []
        pending: list[tuple[list[PreparedView | _Skip | None], int]] = []

        def flush() -> None:
            if not batch:
                return
            out = self.forward(np.stack([v.pixels for v in batch]))
            for (slots, i), s in zip(pending, out, strict=True):
                scores[id(slots[i])] = float(s)
            batch.clear()
            pending.clear()

        def take_one() -> None:
            slots, i, fut = window.popleft()
            res = fut.result()
            slots[i] = res
            if isinstance(res, PreparedView):
                batch.append(res)
                pending.append((slots, i))
                if len(batch) >= self.batch_size:
                    flush()

        def ready() -> Iterator[ExamResult]:
            while order and all(s is not None and (isinstance(s, _Skip) or id(s) in scores)
                                for s in order[0][1]):
                exam, slots = order.popleft()
                yield self._result(exam, slots, scores)

        with self._executor() as pool:
            for exam in exams:
                slots: list[PreparedView | _Skip | None] = [None] * len(exam.views)
                order.append((exam, slots))
                for i, item in enumerate(exam.views):
                    while len(window) >= self.prefetch:
                        take_one()
                    window.append((slots, i, pool.submit(_prepare, item, p, size,
                                                         intents, codes)))
                yield from ready()
            while window:
                take_one()
            flush()
            yield from ready()

    def score_exam(self, exam: ExamInput) -> ExamResult:
        return next(iter(self.score_exams([exam])))

    def _result(self, exam: ExamInput, slots: list[PreparedView | _Skip | None],
                scores: dict[int, float]) -> ExamResult:
        views: list[ViewResult] = []
        for s in slots:
            if isinstance(s, PreparedView):
                views.append(ViewResult(s.info.sop_instance_uid, s.info.laterality, s.info.view,
                                        scores.pop(id(s)), None, s.flipped, s.laterality_check,
                                        s.voi_source))
            elif isinstance(s, _Skip):
                views.append(ViewResult(s.sop_instance_uid, s.laterality, s.view, None, s.reason))
        scored = [v for v in views if v.score is not None]
        missing = missing_views(((v.laterality, v.view) for v in scored), self.card.completeness)
        score = aggregate(((v.laterality, float(v.score)) for v in scored
                           if v.score is not None), self.card.aggregation) if scored else None
        return ExamResult(
            exam_id=exam.exam_id,
            score=score,
            category=categorise(score, self.card.thresholds) if score is not None else None,
            model=self.model.identity,
            preprocessing_version=self.card.preprocessing.version,
            aggregation=self.card.aggregation.describe(),
            views=tuple(views),
            complete=not missing,
            missing=tuple(f"{m.laterality}-{m.view}" for m in missing),
        )


@lru_cache(maxsize=2)
def _cached_model(folder: str, sha256: str, device: str) -> LoadedModel:
    return load_model(Path(folder), device)


def scorer_for_process(folder: Path, device: str = "auto", **kwargs: object) -> Scorer:
    """The process's one model load (keyed by folder, weights digest and device)."""
    from workers.score.card import load_card

    card = load_card(folder)
    dev = pick_device(device)
    model = _cached_model(str(Path(folder).resolve()), card.weights.sha256, str(dev))
    return Scorer(model, **kwargs)  # type: ignore[arg-type]
