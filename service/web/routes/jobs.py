"""``/jobs``: submit an extraction job, follow it live, retry or cancel it, and download its
per-study failure report. For admins and the ``service`` role (research coordinators).

The request's values (accession numbers, patient IDs, study UIDs) are PHI: they arrive in the
POST body or an uploaded CSV, go straight to the jobs layer (which seals them), and appear in no
URL, title or log; errors name the field and position, never the value. Job pages show counts,
states and pseudonymous study UIDs only. Progress is polled every few seconds by htmx and the
polling stops by itself: a finished job's fragment no longer carries the trigger.
"""

from __future__ import annotations

import csv
import io
import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.api.deps import KeysDep, SessionDep, SettingsDep
from service.core.errors import DeidgateError
from service.core.security import Role
from service.db.models.jobs import JobStudy
from service.db.models.triage import TriageEntry
from service.db.states import TERMINAL_JOB_STATES
from service.dicom import admin as dicom_admin
from service.jobs import ops
from service.jobs.schemas import SELECTORS, JobView
from service.web.deps import WebForbidden, require_web_role
from service.web.render import is_htmx, page
from service.web.sessions import WebPrincipal

router = APIRouter(prefix="/jobs", include_in_schema=False)
Coordinator = Annotated[WebPrincipal, Depends(require_web_role(Role.admin, Role.service))]
_JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_CODE = re.compile(r"^([a-z][a-z0-9-]{1,48})(?::|$)")
MAX_CSV_BYTES = 4 << 20
POLL_SECONDS = 3
CSV_HEADERS = {
    "accession_number": "accession_numbers", "accession_numbers": "accession_numbers",
    "accessionnumber": "accession_numbers", "patient_id": "patient_ids",
    "patient_ids": "patient_ids", "patientid": "patient_ids",
    "study_instance_uid": "study_instance_uids", "study_instance_uids": "study_instance_uids",
    "studyinstanceuid": "study_instance_uids",
}


def reason_code(reason: str | None) -> str:
    """The code at the front of a stored reason ("no-studies: ..."), never its free text."""
    if not reason:
        return ""
    m = _CODE.match(reason.strip())
    return m.group(1) if m else "unspecified"


def scored_studies(session: Session, job_id: str) -> int:
    """Studies of the job with a triage score (the scoring worker's rows, by study pseudonym)."""
    return int(session.scalar(
        select(func.count(func.distinct(JobStudy.id))).select_from(JobStudy)
        .join(TriageEntry, TriageEntry.exam == JobStudy.pseudo_uid)
        .where(JobStudy.job_id == job_id)) or 0)


def progress(session: Session, view: JobView) -> dict[str, Any]:
    """What the progress bars show: (label, value, max, unit) per stage."""
    c = view.counts
    found_max = c.studies_found if view.selector == "query" else max(view.requested,
                                                                       c.studies_found)
    expected = max(c.instances_expected, c.instances_received)
    bars = [
        ("found", "Studies found", c.studies_found, found_max, "studies"),
        ("received", "Received", c.instances_received, expected, "instances"),
        ("deidentified", "De-identified", c.instances_deidentified, expected, "instances"),
        ("scored", "Scored", scored_studies(session, view.id), c.studies_found, "studies"),
        ("refused", "Refused", c.instances_refused, expected, "instances"),
        ("failed", "Failed", c.instances_failed, expected, "instances"),
    ]
    return {"job": view, "bars": bars, "finished": view.state in TERMINAL_JOB_STATES,
            "poll": POLL_SECONDS}


def _job(session: Session, job_id: str) -> JobView:
    view = ops.get_job(session, job_id) if _JOB_ID.match(job_id) else None
    if view is None:
        raise WebForbidden("No job has that id.", status=404)
    return view


def _choices(session: Session) -> dict[str, Any]:
    from workers.deid.policy import shipped_policies

    return {"nodes": dicom_admin.list_nodes(session), "policies": sorted(shipped_policies())}


def _index(request: Request, session: Session, settings: Any, *, error: str = "",
           status: int = 200, form: dict[str, str] | None = None) -> HTMLResponse:
    jobs = [progress(session, v) for v in ops.list_jobs(session, limit=25)]
    return page(request, "jobs/index.html", title="Jobs", status=status, jobs=jobs, error=error,
                form=form or {}, default_policy=settings.default_policy, selectors=SELECTORS,
                **_choices(session))


@router.get("", response_class=HTMLResponse)
def index(request: Request, session: SessionDep, settings: SettingsDep,
          _: Coordinator) -> Response:
    return _index(request, session, settings)


def csv_values(data: bytes) -> tuple[str | None, list[str]]:
    """(selector named by the header row, or None) and the values of the first column."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ops.InvalidJobRequest("the CSV file is not UTF-8 text") from None
    rows = [r for r in csv.reader(io.StringIO(text)) if any(c.strip() for c in r)]
    if not rows:
        raise ops.InvalidJobRequest("the CSV file has no rows")
    selector = CSV_HEADERS.get(rows[0][0].strip().lower().replace(" ", "_"))
    body = rows[1:] if selector else rows
    for i, r in enumerate(body, start=2 if selector else 1):
        if not r or not r[0].strip():
            raise ops.InvalidJobRequest(f"CSV line {i}: the first column is empty")
    return selector, [r[0].strip() for r in body]


def build_request(form: dict[str, str], csv_data: bytes | None) -> ops.JobRequest:
    selector = form.get("selector", "")
    body: dict[str, Any] = {"pacs": form.get("pacs", "")}
    if form.get("policy"):
        body["policy"] = form["policy"]
    if form.get("destination"):
        body["destination"] = form["destination"]
    if csv_data:
        named, values = csv_values(csv_data)
        selector = named or selector
        if selector not in SELECTORS[:3]:
            raise ops.InvalidJobRequest("choose what the CSV lists (accession numbers, patient "
                                        "IDs or study UIDs), or name it in a header row")
        body[selector] = values
    elif selector == "query":
        body["query"] = {"modality": form.get("modality") or "MG",
                         "date_from": form.get("date_from") or None,
                         "date_to": form.get("date_to") or None}
    elif selector in SELECTORS:
        body[selector] = [v for v in re.split(r"[\r\n,;]+", form.get("values", "")) if v.strip()]
    else:
        raise ops.InvalidJobRequest("choose what to select studies by")
    return ops.parse_job_request(body)


@router.post("")
async def submit(request: Request, session: SessionDep, settings: SettingsDep, keys: KeysDep,
                 who: Coordinator, csv_file: UploadFile | None = None) -> Response:
    from starlette.concurrency import run_in_threadpool

    raw = await request.form()
    form = {k: v for k, v in raw.items() if isinstance(v, str) and k != "csrf_token"}
    data = await csv_file.read(MAX_CSV_BYTES + 1) if csv_file and csv_file.filename else None
    try:
        if data is not None and len(data) > MAX_CSV_BYTES:
            raise ops.InvalidJobRequest("the CSV file is larger than 4 MiB")
        req = build_request(form, data)
        view = await run_in_threadpool(ops.submit_job, session, settings, keys, req,
                                       actor=who.actor)
    except DeidgateError as exc:
        session.rollback()
        return await run_in_threadpool(_index, request, session, settings, error=exc.reason,
                                       status=422, form=form)
    return RedirectResponse(f"/jobs/{view.id}", status_code=303)


@router.get("/{job_id}", response_class=HTMLResponse)
def detail(job_id: str, request: Request, session: SessionDep, _: Coordinator) -> Response:
    view = _job(session, job_id)
    return page(request, "jobs/detail.html", title="Job", p=progress(session, view),
                reason_code=reason_code, error="")


@router.get("/{job_id}/progress", response_class=HTMLResponse)
def progress_fragment(job_id: str, request: Request, session: SessionDep,
                      _: Coordinator) -> Response:
    p = progress(session, _job(session, job_id))
    # A poll only comes from a page that showed the job running: once it has finished, that
    # page reloads once, so its study table and buttons are final too (and it polls no more).
    headers = {"HX-Refresh": "true"} if p["finished"] and is_htmx(request) else None
    return page(request, "jobs/_progress.html", title="Progress", p=p, headers=headers)


def _act(request: Request, session: Session, job_id: str, action: Any) -> Response:
    view = _job(session, job_id)
    try:
        action()
    except DeidgateError as exc:
        session.rollback()
        return page(request, "jobs/detail.html", title="Job", status=409, error=exc.reason,
                    p=progress(session, view), reason_code=reason_code)
    if is_htmx(request):
        return Response(status_code=204, headers={"HX-Redirect": f"/jobs/{job_id}"})
    return RedirectResponse(f"/jobs/{job_id}", status_code=303)


@router.post("/{job_id}/cancel")
def cancel(job_id: str, request: Request, session: SessionDep, keys: KeysDep,
           who: Coordinator) -> Response:
    return _act(request, session, job_id,
                lambda: ops.cancel_job(session, job_id, actor=who.actor, keys=keys))


@router.post("/{job_id}/retry")
def retry(job_id: str, request: Request, session: SessionDep, settings: SettingsDep,
          keys: KeysDep, who: Coordinator) -> Response:
    return _act(request, session, job_id, lambda: ops.retry_job(
        session, job_id, actor=who.actor, settings=settings, keys=keys))


def _cell(value: object) -> str:
    """Spreadsheet-safe: a cell starting with = + - @ would be run as a formula."""
    text = "" if value is None else str(value)
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


@router.get("/{job_id}/failures.csv")
def failures_csv(job_id: str, session: SessionDep, _: Coordinator) -> Response:
    """One row per study that did not complete cleanly: index, pseudonymous UID, state, reason
    code and the instance counts; no identifier, no free text."""
    view = _job(session, job_id)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(["study_index", "study_uid", "state", "reason_code", "instances_expected",
                "instances_received", "instances_refused", "instances_failed"])
    for s in view.studies:
        if s.state == "complete" and not s.refused and not s.failed:
            continue
        w.writerow([_cell(v) for v in (s.index, s.study_uid or "", s.state,
                                       reason_code(s.reason), s.expected or 0, s.received,
                                       s.refused, s.failed)])
    return Response(buf.getvalue(), media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="job-{view.id}-failures.csv"'})
