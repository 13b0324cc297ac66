"""Extraction jobs: submit, follow, cancel, retry; dead-lettered tasks and their retry.

Roles:
- create, cancel, retry (jobs and dead letters): ``service`` (research coordinators' scripts)
  and ``admin``. These pull identified data out of the PACS, so they are not for everyone.
- read (list, get, dead letters): ``service``, ``admin``, ``staff`` and ``auditor``. A
  ``JobView`` is PHI-free (counts, states, pseudonymous study UIDs), screening staff want to
  know whether the exams they wait for have arrived, and auditors follow a job id found in the
  mapping log back to who submitted it.

The request body carries PHI (accession numbers, patient IDs, study UIDs): it travels in the
body, never the URL; it is stored sealed by the jobs layer and never returned.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel

from service.api.deps import KeysDep, SessionDep, SettingsDep, require_role
from service.api.errors import ApiError
from service.api.openapi import Responses, error_response
from service.core.security import Principal, Role
from service.db.states import JobState
from service.jobs.ops import (
    InvalidJobRequest,
    JobNotFound,
    JobRequest,
    JobView,
    cancel_job,
    get_job,
    list_dead_letters,
    list_jobs,
    retry_dead_letter,
    retry_job,
    submit_job,
)
from service.jobs.schemas import DeadLetterView

router = APIRouter(tags=["jobs"])

Submitter = Annotated[Principal, Depends(require_role(Role.service, Role.admin))]
Reader = Annotated[
    Principal, Depends(require_role(Role.service, Role.admin, Role.staff, Role.auditor))
]
JobId = Annotated[
    str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="job id as returned on creation")
]
# Row ids are the database's INTEGER (32-bit on PostgreSQL); beyond it no row can exist, and
# the driver would fail on the value, so the schema says so and FastAPI answers 422.
DeadLetterId = Annotated[int, Path(ge=1, le=2**31 - 1, description="dead letter id")]
# OFFSET is a signed 64-bit integer in SQLite and PostgreSQL.
Offset = Annotated[int, Query(ge=0, le=2**63 - 1, description="entries to skip")]
NO_JOB: Responses = {404: error_response("no job with this id")}
FINISHED: Responses = {409: error_response("the job's state does not allow this")}


class JobList(BaseModel):
    items: list[JobView]
    limit: int
    offset: int


def _not_found(exc: JobNotFound) -> ApiError:
    return ApiError(404, exc.code, exc.reason)


@router.post("/jobs", status_code=201, response_model=JobView, summary="Submit an extraction job")
def create_job(
    req: JobRequest, session: SessionDep, settings: SettingsDep, keys: KeysDep, who: Submitter
) -> JobView:
    """service, admin. Exactly one selector (accession_numbers, patient_ids,
    study_instance_uids, or query with a date range); unknown PACS node or policy -> 422."""
    try:
        return submit_job(session, settings, keys, req, actor=who.actor)
    except InvalidJobRequest as exc:
        raise ApiError(422, exc.code, exc.reason) from None


@router.get("/jobs", response_model=JobList, summary="List jobs, newest first")
def jobs(
    session: SessionDep,
    _: Reader,
    state: Annotated[JobState | None, Query(description="only jobs in this state")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Offset = 0,
) -> JobList:
    """service, admin, staff, auditor. Summaries only: per-study detail is on GET /jobs/{id}."""
    return JobList(
        items=list_jobs(session, state=state, limit=limit, offset=offset),
        limit=limit,
        offset=offset,
    )


@router.get(
    "/jobs/{job_id}", response_model=JobView, summary="One job with live progress", responses=NO_JOB
)
def job(job_id: JobId, session: SessionDep, _: Reader) -> JobView:
    """service, admin, staff, auditor."""
    view = get_job(session, job_id)
    if view is None:
        raise ApiError(404, JobNotFound.code, f"no job with id {job_id!r}")
    return view


@router.post(
    "/jobs/{job_id}/cancel", response_model=JobView, summary="Cancel a job",
    responses={**NO_JOB, **FINISHED},
)
def cancel(job_id: JobId, session: SessionDep, keys: KeysDep, who: Submitter) -> JobView:
    """service, admin. Instances already received are still de-identified (nothing identified
    is left in the spool); a finished job -> 409."""
    try:
        return cancel_job(session, job_id, actor=who.actor, keys=keys)
    except JobNotFound as exc:
        raise _not_found(exc) from None
    except InvalidJobRequest as exc:
        raise ApiError(409, exc.code, exc.reason) from None


@router.post(
    "/jobs/{job_id}/retry", response_model=JobView, summary="Retry a job's failed parts",
    responses={**NO_JOB, **FINISHED},
)
def retry(
    job_id: JobId, session: SessionDep, settings: SettingsDep, keys: KeysDep, who: Submitter
) -> JobView:
    """service, admin. Only finished jobs; a running job or nothing to retry -> 409."""
    try:
        return retry_job(session, job_id, actor=who.actor, settings=settings, keys=keys)
    except JobNotFound as exc:
        raise _not_found(exc) from None
    except InvalidJobRequest as exc:
        raise ApiError(409, exc.code, exc.reason) from None


@router.get(
    "/jobs/{job_id}/dead-letters",
    response_model=list[DeadLetterView],
    summary="A job's dead-lettered tasks",
    responses=NO_JOB,
)
def job_dead_letters(job_id: JobId, session: SessionDep, _: Reader) -> list[DeadLetterView]:
    """service, admin, staff, auditor."""
    if get_job(session, job_id) is None:
        raise ApiError(404, JobNotFound.code, f"no job with id {job_id!r}")
    return list_dead_letters(session, job_id=job_id)


@router.get(
    "/dead-letters", response_model=list[DeadLetterView], summary="All dead-lettered tasks"
)
def dead_letters(session: SessionDep, _: Reader) -> list[DeadLetterView]:
    """service, admin, staff, auditor. Tasks that kept failing, with their reasons."""
    return list_dead_letters(session)


@router.post(
    "/dead-letters/{dead_letter_id}/retry",
    response_model=DeadLetterView,
    summary="Re-queue one dead-lettered task",
    responses={
        404: error_response("no dead-lettered task with this id"),
        409: error_response("the task was already retried"),
    },
)
def retry_dead(
    dead_letter_id: DeadLetterId, session: SessionDep, settings: SettingsDep, who: Submitter
) -> DeadLetterView:
    """service, admin. Already retried -> 409."""
    try:
        return retry_dead_letter(session, settings, dead_letter_id, actor=who.actor)
    except JobNotFound as exc:
        raise _not_found(exc) from None
    except InvalidJobRequest as exc:
        raise ApiError(409, exc.code, exc.reason) from None
