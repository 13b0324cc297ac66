"""``/worklist``: the screening staff's triage worklist and exam pages (staff and admins).

- The list is ``service.triage.worklist`` (the same query as ``GET /api/v1/triage/worklist``):
  over-the-ceiling exams first, then by score; category badges, time waiting, the ceiling
  itself, filters (category, arrival dates, unread only) as GET parameters (no PHI: a
  category and two dates), and pages taken "as of" one instant so they never overlap.
- Keyboard triage (``static/worklist.js``, no inline script): j/k move, Enter opens, r marks
  read. Marking read is a POST with the CSRF token, answered in place for htmx/fetch.
- The exam page shows the four de-identified views as PNG thumbnails rendered on the server
  from the output folder (``service.triage.thumbs``), per-view scores and the model's identity,
  and "synthetic demo model, not for clinical use" wherever the demo model scored.
- Revealing the accession number is a POST with a reason and a confirmation; the audit event
  is committed before the number is decrypted (``service.triage.actions``), and it is shown
  once, in the answer, never in a URL or a title. Every page is ``no-store``
  (``service.web.security``); only pseudonymous UIDs appear in paths.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from service.api.deps import KeysDep, SessionDep, SettingsDep
from service.core.security import Role
from service.db.models.triage import CATEGORIES
from service.triage import actions
from service.triage.thumbs import ThumbnailUnavailable, render_png, view_file
from service.triage.worklist import Filters, ceiling_of, exam_detail, humanize, worklist
from service.web.deps import WebForbidden, require_web_role
from service.web.render import TEMPLATES, is_htmx, page
from service.web.sessions import WebPrincipal

router = APIRouter(prefix="/worklist", include_in_schema=False)
Reader = Annotated[WebPrincipal, Depends(require_web_role(Role.staff, Role.admin))]
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
PAGE_SIZE = 25
LABELS = {"likely-normal": "Likely normal", "standard": "Standard", "priority": "Priority"}
DEMO_LABEL = "synthetic demo model — not for clinical use"

TEMPLATES.env.filters["waiting"] = humanize
TEMPLATES.env.globals["category_label"] = LABELS.get
TEMPLATES.env.globals["demo_label"] = DEMO_LABEL


def _uid(value: str) -> str:
    if len(value) > 64 or not _UID.match(value):
        raise WebForbidden("No worklist exam has that UID.", status=404)
    return value


def _day(value: str, label: str, errors: list[str]) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        errors.append(f"{label} is not a date (YYYY-MM-DD); it was ignored.")
        return None


def _instant(value: str, errors: list[str]) -> datetime | None:
    if not value:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        errors.append("The page's ranking time was not understood; the list is ranked now.")
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _ceiling_text(minutes: int) -> str:
    return humanize(minutes * 60)


@router.get("", response_class=HTMLResponse)
def index(request: Request, session: SessionDep, settings: SettingsDep, _: Reader,
          category: str = "", date_from: str = "", date_to: str = "", unread: str = "",
          offset: str = "0", as_of: str = "") -> Response:
    errors: list[str] = []
    if category and category not in CATEGORIES:
        errors.append("Unknown category; showing every category.")
        category = ""
    start = _day(date_from, "From", errors)
    end = _day(date_to, "To", errors)
    skip = int(offset) if offset.isdigit() and len(offset) < 10 else 0
    at = _instant(as_of, errors) if skip else None  # a first page is always ranked now
    filters = Filters(category=category or None, date_from=start, date_to=end,
                      unread_only=unread == "1")
    result = worklist(session, ceiling=ceiling_of(settings.triage_max_wait_minutes),
                      filters=filters, limit=PAGE_SIZE, offset=skip, as_of=at)
    keep = {k: v for k, v in (("category", category), ("date_from", date_from),
                              ("date_to", date_to), ("unread", "1" if unread == "1" else ""))
            if v}

    def link(to: int) -> str:
        query = {**keep, "offset": str(to), "as_of": result.as_of.isoformat()} if to else keep
        return "/worklist" + ("?" + urlencode(query) if query else "")

    more = skip + PAGE_SIZE < result.total
    return page(
        request, "worklist/index.html", title="Worklist", result=result, errors=errors,
        form={"category": category, "date_from": date_from, "date_to": date_to,
              "unread": unread == "1"},
        categories=CATEGORIES, ceiling_text=_ceiling_text(settings.triage_max_wait_minutes),
        demo=any(r.demo for r in result.items),
        prev_url=link(max(0, skip - PAGE_SIZE)) if skip else None,
        next_url=link(skip + PAGE_SIZE) if more else None)


def _exam_page(request: Request, session: Any, settings: Any, exam: str, *, status: int = 200,
               **ctx: Any) -> Response:
    row = exam_detail(session, exam, ceiling=ceiling_of(settings.triage_max_wait_minutes))
    if row is None:
        raise WebForbidden("No worklist exam has that UID.", status=404)
    ctx.setdefault("reveal", None)
    return page(request, "worklist/exam.html", title="Exam", status=status, row=row,
                ceiling_text=_ceiling_text(settings.triage_max_wait_minutes), **ctx)


@router.get("/{exam}", response_class=HTMLResponse)
def exam_page(exam: str, request: Request, session: SessionDep, settings: SettingsDep,
              _: Reader) -> Response:
    return _exam_page(request, session, settings, _uid(exam))


@router.get("/{exam}/views/{sop}.png")
def view_png(exam: str, sop: str, session: SessionDep, settings: SettingsDep,
             _: Reader) -> Response:
    """One view as an 8-bit PNG (windowed, MONOCHROME1 inverted), from the output folder."""
    row = exam_detail(session, _uid(exam), ceiling=ceiling_of(settings.triage_max_wait_minutes))
    view = next((v for v in row.views if v.sop == sop), None) if row else None
    if view is None:
        return Response("no such view", status_code=404, media_type="text/plain")
    try:
        png = render_png(view_file(settings.output_dir, view.file))
    except ThumbnailUnavailable as exc:
        return Response(exc.reason, status_code=404, media_type="text/plain")
    return Response(png, media_type="image/png")


@router.post("/{exam}/read", response_class=HTMLResponse)
def mark_read(exam: str, request: Request, session: SessionDep, settings: SettingsDep,
              keys: KeysDep, who: Reader,
              back: Annotated[str, Form(max_length=8)] = "list") -> Response:
    """Answered in place (htmx, worklist.js) with the new state, or back to the page."""
    uid = _uid(exam)
    try:
        state = actions.mark_read(session, keys, uid, actor=who.actor)
    except actions.ExamUnknown:
        raise WebForbidden("No worklist exam has that UID.", status=404) from None
    if is_htmx(request):
        return page(request, "worklist/_state.html", title="Read", read_by=state.read_by,
                    read_at=state.read_at, exam=uid)
    return RedirectResponse(f"/worklist/{uid}" if back == "exam" else "/worklist",
                            status_code=303)


@router.post("/{exam}/reveal", response_class=HTMLResponse)
def reveal(exam: str, request: Request, session: SessionDep, settings: SettingsDep,
           keys: KeysDep, who: Reader,
           reason: Annotated[str, Form(max_length=500)] = "",
           confirm: Annotated[str, Form(max_length=8)] = "") -> Response:
    uid = _uid(exam)
    error, accession = "", None
    try:
        accession = actions.reveal_accession(session, keys, uid, reason=reason,
                                             confirmed=confirm == "yes", actor=who.actor)
    except actions.ExamUnknown:
        raise WebForbidden("No worklist exam has that UID.", status=404) from None
    except actions.RevealRefused as exc:
        error = exc.reason[0].upper() + exc.reason[1:] + "."
    except actions.AccessionUnknown:
        error = "No accession number is recorded for this exam (the request was recorded)."
    status = 422 if error else 200
    reveal_ctx = {"error": error, "accession": accession}
    if is_htmx(request):
        return page(request, "worklist/_reveal.html", title="Accession number", status=status,
                    reveal=reveal_ctx)
    return _exam_page(request, session, settings, uid, status=status, reveal=reveal_ctx)
