"""Scoring results into the database: one ``ScoreResult`` per (exam, model), and the worklist row.

``record_result`` adds the result of an exam by a model, or returns the one already there (unique
on exam + model sha256: a redelivered task, or a re-run on identical input, adds nothing; the
scores would be the same anyway, tests/score/test_scoring.py checks it). Re-scoring with another
model adds a row and keeps the old ones. ``show_result`` points the exam's ``TriageEntry`` at a
result (the active model's) and mirrors its score, category, model version and time; whether the
exam was read stays as it was (a new model does not make a read exam unread).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.db.base import utcnow
from service.db.models.triage import ScoreResult, TriageEntry

if TYPE_CHECKING:  # torch: the worklist and the CLI import this module without it
    from workers.score.infer import ExamResult


def category_label(category: object) -> str:
    """The stored spelling (``likely-normal``) of ``workers.score.aggregate.Category``."""
    return str(category).replace("_", "-")


def view_rows(result: ExamResult, files: dict[str, Path], series: dict[str, str],
              output_dir: Path) -> list[dict[str, Any]]:
    """The ``views`` JSON: every scored view, its pseudonymous UIDs and its output file."""
    rows = []
    for v in result.views:
        if v.score is None:
            continue
        path = files.get(v.sop_instance_uid)
        try:
            rel = str(path.resolve().relative_to(output_dir.resolve())) if path else ""
        except ValueError:
            rel = path.name if path else ""
        rows.append({"sop": v.sop_instance_uid, "series": series.get(v.sop_instance_uid, ""),
                     "laterality": v.laterality or "", "view": v.view or "",
                     "score": float(v.score), "file": rel})
    return rows


def completeness_note(result: ExamResult, scored: int, waited: bool) -> str | None:
    """Why an exam was scored with fewer than its standard views, in words (no PHI)."""
    if result.complete:
        return None
    required = scored + len(result.missing)
    text = f"scored with {scored} of {required} views"
    if waited:
        text += " after the quiet period"
    text += f" (missing {', '.join(result.missing)})"
    skipped = sorted({v.skipped for v in result.views if v.skipped})
    if skipped:
        text += f"; views not scored: {', '.join(skipped)}"
    return text[:200]


def find_result(session: Session, exam: str, sha256: str) -> ScoreResult | None:
    return session.scalars(select(ScoreResult).where(
        ScoreResult.exam == exam, ScoreResult.model_sha256 == sha256)).first()


def record_result(session: Session, result: ExamResult, *, patient_pseudonym: str,
                  views: list[dict[str, Any]], note: str | None,
                  at: datetime | None = None) -> ScoreResult:
    """Add this exam's result by this model (or return the one already recorded); commits."""
    if result.score is None or result.category is None:
        raise ValueError("an exam without a score is not recorded")
    existing = find_result(session, result.exam_id, result.model.sha256)
    if existing is not None:
        return existing
    row = ScoreResult(
        exam=result.exam_id, patient_pseudonym=patient_pseudonym, score=float(result.score),
        category=category_label(result.category), model_name=result.model.name,
        model_version=result.model.version, model_sha256=result.model.sha256,
        device_uid=result.model.device_uid, preprocessing_version=result.preprocessing_version,
        demo=result.model.synthetic_demo, views=views, complete=result.complete, note=note,
        scored_at=at or utcnow())
    session.add(row)
    try:
        session.commit()
    except IntegrityError:  # a concurrent delivery recorded it first: same model, same input
        session.rollback()
        found = find_result(session, result.exam_id, result.model.sha256)
        assert found is not None
        return found
    return row


def show_result(session: Session, row: ScoreResult, *, arrived_at: datetime,
                accession_pseudonym: str | None) -> TriageEntry:
    """Make ``row`` the result staff see for its exam (insert or update the worklist row)."""
    for _ in range(2):
        entry = session.scalars(select(TriageEntry).where(TriageEntry.exam == row.exam)).first()
        if entry is None:
            entry = TriageEntry(exam=row.exam, patient_pseudonym=row.patient_pseudonym)
            session.add(entry)
        entry.result_id = row.id
        entry.score, entry.category = row.score, row.category
        entry.model_version = row.model_version
        entry.scored_at = row.scored_at
        entry.arrived_at = arrived_at
        if accession_pseudonym:
            entry.accession_pseudonym = accession_pseudonym
        try:
            session.commit()
            return entry
        except IntegrityError:  # another worker inserted the exam's row: update that one
            session.rollback()
    raise RuntimeError("could not write the worklist row")
