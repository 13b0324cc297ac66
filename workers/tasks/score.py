"""score_study: score a fully de-identified study with the active model, on the ``score`` queue.

The study arrives in ``scoring`` (``check_study`` put it there because a model is configured).
The task reads the de-identified views from the output store, applies the card's completeness
gate (by default the four standard views R/L x CC/MLO among the views the card scores): an
incomplete exam waits for the quiet period (``settings.score_quiet_period_s``, else the card's
``completeness.quiet_period_s``) counted from its last de-identified view, then is scored with
what it has and its result says so (``note``). It scores each view and the exam
(``workers.score.infer``: one model load per process, CUDA with autocast and channels_last when
present, the CPU otherwise), records a ``ScoreResult`` and points the exam's ``TriageEntry`` at
it, writes the DICOM SR (``workers.score.sr``) beside the images and C-STOREs it where settings
and the job ask, and moves the study to ``complete``.

Idempotent: a result already recorded for (exam, model sha256) is reused, the SR has stable UIDs
(same file, same instance at the PACS), and the final move is conditional. Nothing here is PHI:
exams are pseudonymous study UIDs, reasons are codes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from celery import shared_task
from pydicom import dcmread
from pydicom.dataset import Dataset
from sqlalchemy import select

from service.core.config import Settings
from service.core.queues import TaskName
from service.db.base import as_utc, utcnow
from service.db.models.jobs import Job, JobInstance, JobStudy
from service.db.session import session_scope
from service.db.states import InstanceState, StudyState
from service.jobs import pacs
from service.jobs.transitions import conditional_update, refresh_job, scoring_finished
from workers.score.aggregate import missing_views
from workers.score.card import ModelCard, load_card
from workers.score.preprocess import view_info
from workers.score.registry import active_folder
from workers.score.results import (
    category_label,
    completeness_note,
    find_result,
    record_result,
    show_result,
    view_rows,
)
from workers.tasks.base import DeidgateTask, StudyTask

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoreOutcome:
    status: str                     # scored | reused | deferred | not-scored | skipped
    result_id: int | None = None
    retry_in: float | None = None   # deferred: seconds until the quiet period ends
    sr_path: Path | None = None
    sr_sent: tuple[str, ...] = ()
    reason: str | None = None


@dataclass(frozen=True)
class _View:
    path: Path
    header: Dataset
    laterality: str | None
    view: str | None
    scorable: bool


def _views(paths: list[Path], card: ModelCard) -> list[_View]:
    out = []
    for p in paths:
        try:
            h = dcmread(p, stop_before_pixels=True)
        except Exception as exc:  # an unreadable output file is skipped, and said so
            log.warning("output file unreadable (%s); not scored", type(exc).__name__)
            continue
        info = view_info(h)
        ok = info.presentation_intent in card.views.presentation_intents and \
            info.view in card.views.view_codes
        out.append(_View(p, h, info.laterality, info.view, ok))
    return out


def _quiet_period(settings: Settings, card: ModelCard) -> int:
    q = settings.score_quiet_period_s
    return card.completeness.quiet_period_s if q is None else q


def score_study(settings: Settings, study_id: int, *, now: datetime | None = None,
                device: str | None = None, metrics: Any = None) -> ScoreOutcome:
    """Everything the task does, callable without Celery (tests, ``deidgate demo``)."""
    now = now or utcnow()
    with session_scope(settings.db_url) as s:
        st = s.get(JobStudy, study_id)
        if st is None or st.state != StudyState.SCORING:
            return ScoreOutcome("skipped")
        job = s.get(Job, st.job_id)
        destination = job.destination if job else None
        job_id, pseudo_uid = st.job_id, st.pseudo_uid
        rows = list(s.execute(select(JobInstance.out_path, JobInstance.updated_at).where(
            JobInstance.study_id == study_id, JobInstance.state == InstanceState.WRITTEN)))
    folder = active_folder(settings)
    if folder is None:
        return _finish(settings, study_id, job_id, "not-scored", "not scored: no active model")
    card = load_card(folder)
    views = _views([Path(p) for p, _ in rows if p and Path(p).is_file()], card)
    scorable = [v for v in views if v.scorable]
    if not scorable:
        return _finish(settings, study_id, job_id, "not-scored",
                       "not scored: no view the model scores (intent, view code)")
    missing = missing_views(((v.laterality, v.view) for v in scorable), card.completeness)
    arrived = max(as_utc(t) for _, t in rows if t is not None) if rows else now
    waited = (now - arrived).total_seconds()
    quiet = _quiet_period(settings, card)
    if missing and waited < quiet:
        with session_scope(settings.db_url) as s:  # touched: the sweep leaves a waiting study
            s.execute(conditional_update(JobStudy).where(JobStudy.id == study_id)
                      .values(updated_at=utcnow()))
        return ScoreOutcome("deferred", retry_in=max(1.0, quiet - waited))
    exam = pseudo_uid or str(scorable[0].header.StudyInstanceUID)
    first = scorable[0].header
    with session_scope(settings.db_url) as s:
        existing = find_result(s, exam, card.weights.sha256)
        result_id = existing.id if existing else None
    status = "reused"
    if result_id is None:
        from workers.score.infer import ExamInput, scorer_for_process  # torch: first use

        scorer = scorer_for_process(folder, device or settings.score_device,
                                    batch_size=settings.score_batch_size)
        t0 = time.perf_counter()
        result = scorer.score_exam(ExamInput(exam, [v.path for v in scorable]))
        seconds = time.perf_counter() - t0
        if result.score is None or result.category is None:
            codes = sorted({v.skipped for v in result.views if v.skipped})
            return _finish(settings, study_id, job_id, "not-scored",
                           f"not scored: no view could be scored ({', '.join(codes)})")
        if metrics is not None:
            metrics.observe_inference(seconds, scorer.model.device.type)
            metrics.observe_score(category_label(result.category), float(result.score))
        files = {str(v.header.SOPInstanceUID): v.path for v in scorable}
        series = {str(v.header.SOPInstanceUID): str(v.header.SeriesInstanceUID)
                  for v in scorable}
        n_scored = sum(1 for v in result.views if v.score is not None)
        note = completeness_note(result, n_scored, waited=bool(missing))
        with session_scope(settings.db_url) as s:
            row = record_result(s, result, patient_pseudonym=str(first.get("PatientID", "")),
                                views=view_rows(result, files, series, settings.output_dir),
                                note=note)
            result_id = row.id
        status = "scored"
        log.info("study %d scored in %.2f s (%s, category %s)", study_id, seconds,
                 card.display_name, category_label(result.category))
    with session_scope(settings.db_url) as s:
        from service.db.models.triage import ScoreResult

        shown = s.get(ScoreResult, result_id)
        assert shown is not None
        show_result(s, shown, arrived_at=arrived,
                    accession_pseudonym=str(first.get("AccessionNumber", "") or "") or None)
        sr_args = (shown.score, shown.category, list(shown.views), shown.note)
    sr_path, sent = None, []
    if settings.score_sr:
        sr_path = _write_sr(settings, card, scorable, *sr_args)
        targets = []
        if settings.score_sr_to_destination and destination:
            targets.append(destination)
        if settings.score_sr_node and settings.score_sr_node not in targets:
            targets.append(settings.score_sr_node)
        for node in targets:  # raises Retryable on a refusal: the task retries, idempotently
            pacs.forward(settings, node, [sr_path])
            sent.append(node)
    done = _finish(settings, study_id, job_id, status, None)
    return ScoreOutcome(done.status, result_id, sr_path=sr_path, sr_sent=tuple(sent))


def _write_sr(settings: Settings, card: ModelCard, scorable: list[_View], score: float,
              category: str, views: list[dict[str, Any]], note: str | None) -> Path:
    from workers.score.sr import SrModel, SrView, build_sr, write_sr  # highdicom: first use

    scored = {v["sop"] for v in views}
    evidence = [v.header for v in scorable if str(v.header.SOPInstanceUID) in scored]
    sr = build_sr(evidence, exam_score=score, category=category,
                  views=[SrView(v["sop"], float(v["score"])) for v in views],
                  model=SrModel(card.name, card.version, card.device_uid, card.weights.sha256,
                                card.synthetic_demo), note=note)
    study_folder = scorable[0].path.parent.parent  # output/<patient>/<study>/<series>/<sop>
    return write_sr(sr, study_folder / str(sr.SeriesInstanceUID))


def _finish(settings: Settings, study_id: int, job_id: str, status: str,
            reason: str | None) -> ScoreOutcome:
    with session_scope(settings.db_url) as s:
        scoring_finished(s, study_id, reason=reason)
    with session_scope(settings.db_url) as s:
        refresh_job(s, job_id)
    if reason:
        log.info("study %d %s", study_id, reason)
    return ScoreOutcome(status, reason=reason)


_metrics: list[Any] = []


def _process_metrics(settings: Settings) -> Any:
    """This worker process's metrics (configured once, on its first scored exam)."""
    if not _metrics:
        from service.core import metrics

        _metrics.append(metrics.configure(settings))
    return _metrics[0]


class ScoreTask(StudyTask):
    abstract = True


@shared_task(bind=True, base=ScoreTask, name=TaskName.SCORE_STUDY.value)
def score_study_task(self: DeidgateTask, study_id: int) -> dict[str, Any]:
    m = None if self.request.is_eager else _process_metrics(self.settings)
    out = score_study(self.settings, study_id, metrics=m)
    if out.status == "deferred" and out.retry_in is not None:
        self.retry_later((study_id,), out.retry_in)
    return {"status": out.status, "result": out.result_id}
