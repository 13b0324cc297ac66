"""The triage worklist: de-identified exams ranked by model score, most suspicious first,
with the maximum-wait ceiling (an exam waiting longer rises to the top whatever its score).

Roles: staff (the screening readers it is for) and admin. Auditors and services are refused:
neither needs clinical prioritisation, and least privilege keeps the list where it is read.
The worklist holds pseudonyms only; the scoring worker fills ``triage_entries`` and
``score_results``. The one original identifier served here, the accession number for clinical
follow-up, comes from a POST with a reason and a confirmation in the body, recorded in the
audit log before it is decrypted (``service.triage.actions``), and is answered ``no-store``.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response
from pydantic import AwareDatetime

from service.api.deps import KeysDep, SessionDep, SettingsDep, require_role
from service.api.errors import ApiError
from service.api.openapi import error_response
from service.api.schemas import (
    Category,
    ExamDetail,
    ReadOut,
    RevealRequest,
    RevealResult,
    Worklist,
    WorklistItem,
    WorklistView,
)
from service.core.security import Principal, Role
from service.triage import actions
from service.triage.worklist import ExamRow, Filters, ceiling_of, exam_detail, worklist

router = APIRouter(prefix="/triage", tags=["triage"])

Reader = Annotated[Principal, Depends(require_role(Role.staff, Role.admin))]
EXAM_PATTERN = r"^[0-9]+(\.[0-9]+)*$"
ExamUid = Annotated[str, Path(min_length=1, max_length=64, pattern=EXAM_PATTERN,
                              description="pseudonymous StudyInstanceUID")]
_UNKNOWN = error_response("no worklist exam has this UID")


def _fields(r: ExamRow) -> dict[str, object]:
    return {
        "exam": r.exam, "patient_pseudonym": r.patient_pseudonym, "score": r.score,
        "category": r.category, "model_name": r.model_name, "model_version": r.model_version,
        "demo": r.demo,
        "views": [WorklistView(sop=v.sop, series=v.series, laterality=v.laterality, view=v.view,
                               score=v.score) for v in r.views],
        "complete": r.complete, "note": r.note, "state": r.state, "read_at": r.read_at,
        "read_by": r.read_by, "arrived_at": r.arrived_at, "waiting_s": r.waiting_s,
        "over_ceiling": r.over_ceiling, "scored_at": r.scored_at,
    }


@router.get("/worklist", response_model=Worklist, summary="Exams ranked by triage score")
def get_worklist(
    session: SessionDep,
    settings: SettingsDep,
    _: Reader,
    category: Annotated[Category | None, Query(description="only this category")] = None,
    date_from: Annotated[date | None, Query(description="arrived on or after this UTC day")] = None,
    date_to: Annotated[date | None, Query(
        description="arrived on or before this UTC day (before date_from: nothing matches)"),
    ] = None,
    unread: Annotated[bool, Query(description="only exams nobody has marked read")] = False,
    as_of: Annotated[AwareDatetime | None, Query(
        description="rank as of this instant (the previous page's as_of); default now")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**63 - 1, description="entries to skip")] = 0,
) -> Worklist:
    """staff, admin. Unread exams over the ceiling first (longest wait first), then highest
    score first; equal scores by who has waited longest, then by row id, so pages taken at
    one ``as_of`` never overlap or skip."""
    page = worklist(
        session, ceiling=ceiling_of(settings.triage_max_wait_minutes),
        filters=Filters(category=category, date_from=date_from, date_to=date_to,
                        unread_only=unread),
        limit=limit, offset=offset, as_of=as_of)
    return Worklist(
        total=page.total, over_ceiling=page.over_ceiling_total,
        max_wait_minutes=settings.triage_max_wait_minutes, as_of=page.as_of, limit=limit,
        offset=offset,
        items=[WorklistItem.model_validate({"rank": r.rank or 0, **_fields(r)})
               for r in page.items],
    )


@router.get("/exams/{exam}", response_model=ExamDetail, summary="One worklist exam",
            responses={404: _UNKNOWN})
def get_exam(exam: ExamUid, session: SessionDep, settings: SettingsDep, _: Reader) -> ExamDetail:
    """staff, admin. The exam with its per-view scores and the model's full identity."""
    r = exam_detail(session, exam, ceiling=ceiling_of(settings.triage_max_wait_minutes))
    if r is None:
        raise ApiError(404, "exam-unknown", "no worklist exam has this UID")
    return ExamDetail.model_validate({
        "model_sha256": r.model_sha256, "device_uid": r.device_uid,
        "preprocessing_version": r.preprocessing_version, "has_accession": r.has_accession,
        **_fields(r)})


@router.post("/exams/{exam}/read", response_model=ReadOut, summary="Mark an exam read",
             responses={404: _UNKNOWN})
def mark_read(exam: ExamUid, session: SessionDep, keys: KeysDep, who: Reader) -> ReadOut:
    """staff, admin. Records who read it and when (and an audit event); marking it again keeps
    the first reader."""
    try:
        state = actions.mark_read(session, keys, exam, actor=who.actor)
    except actions.ExamUnknown as exc:
        raise ApiError(404, exc.code, exc.reason) from None
    return ReadOut(exam=exam, state="read", read_at=state.read_at, read_by=state.read_by,
                   already_read=state.already)


@router.post(
    "/exams/{exam}/reveal", response_model=RevealResult,
    summary="Reveal an exam's accession number for clinical follow-up (recorded)",
    responses={404: error_response(
        "no worklist exam has this UID, or no accession number is recorded for it (the request "
        "is recorded)")},
)
def reveal(exam: ExamUid, body: RevealRequest, response: Response, session: SessionDep,
           keys: KeysDep, who: Reader) -> RevealResult:
    """staff, admin. The original AccessionNumber, so the exam can be followed up in the PACS.
    The reason and confirmation are mandatory; the reveal (caller, reason, pseudonym, exam) is
    committed to the audit log before anything is decrypted."""
    try:
        accession = actions.reveal_accession(session, keys, exam, reason=body.reason,
                                             confirmed=body.confirm, actor=who.actor)
    except (actions.ExamUnknown, actions.AccessionUnknown) as exc:
        raise ApiError(404, exc.code, exc.reason) from None
    except actions.RevealRefused as exc:
        raise ApiError(422, exc.code, exc.reason) from None
    response.headers["Cache-Control"] = "no-store"  # an identifier must not linger in caches
    return RevealResult(exam=exam, accession_number=accession, actor=who.actor)
