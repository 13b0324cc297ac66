"""``/audit``: the auditors' pages. Search the mapping log, re-identify on record, the
re-identification log, the audit chain with Verify, and what de-identification did to one
instance.

- Searches are POSTs answered in place (htmx) or as a page: the pseudonym or the original
  identifier never enters a URL, a title or the browser history; pages are ``no-store``.
- Re-identifying a pseudonym and finding the pseudonyms of an original identifier both need a
  reason, and are the audit store's ``lookup`` and ``find_pseudonyms``, the same calls as
  ``deidgate audit lookup``: the event (actor, reason, pseudonym) is committed before anything
  is shown. Re-identification also needs an explicit confirmation.
- Only pseudonyms appear in paths (``/audit/instances/{pseudonymous SOP Instance UID}``).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, Response

from service.api.deps import KeysDep, SessionDep
from service.audit.crypto import NAMESPACES
from service.audit.instance_actions import GROUP_ORDER, instances_of_study, load_instance_actions
from service.audit.store import AuditStore, LookupRefused
from service.core.security import Role
from service.web.deps import WebForbidden, require_web_role
from service.web.render import is_htmx, page
from service.web.sessions import WebPrincipal

router = APIRouter(prefix="/audit", include_in_schema=False)
Auditor = Annotated[WebPrincipal, Depends(require_web_role(Role.auditor))]
_PSEUDONYM = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
KINDS = tuple(k for k in ("patient", "accession", "study", "series", "instance", "uid")
              if k in NAMESPACES)
GROUP_LABELS = {"removed": "Removed", "emptied": "Emptied (kept, no value)",
                "replaced": "Replaced (pseudonym, new UID, shifted date, dummy or cleaned text)",
                "kept": "Kept unchanged", "private": "Private (kept only when listed as safe)",
                "other": "Other"}


def _answer(request: Request, fragment: str, *, title: str, status: int = 200,
            **ctx: Any) -> HTMLResponse:
    """The fragment for htmx, else the audit page with the fragment in place."""
    if is_htmx(request):
        return page(request, fragment, title=title, status=status, **ctx)
    return page(request, "audit/index.html", title="Audit", status=status, result=fragment,
                kinds=KINDS, **ctx)


@router.get("", response_class=HTMLResponse)
def index(request: Request, _: Auditor) -> Response:
    return page(request, "audit/index.html", title="Audit", kinds=KINDS, result=None)


@router.post("/mappings", response_class=HTMLResponse)
def mappings(request: Request, session: SessionDep, keys: KeysDep, _: Auditor,
             pseudonym: Annotated[str, Form(max_length=256)]) -> Response:
    """Provenance of a pseudonym, no originals (nothing to record)."""
    p = pseudonym.strip()
    if not _PSEUDONYM.match(p):
        return _answer(request, "audit/_mappings.html", title="Mappings", status=422,
                       error="A pseudonym has letters, digits, '.', '_' and '-' only.",
                       rows=[], pseudonym="")
    store = AuditStore(session, keys)
    rows = store.mappings(p)  # and, for a patient pseudonym, everything recorded for her
    rows += [m for m in store.mappings(patient=p) if m.pseudonym != p]
    return _answer(request, "audit/_mappings.html", title="Mappings", rows=rows, pseudonym=p,
                   error="")


@router.post("/reveal", response_class=HTMLResponse)
def reveal(request: Request, session: SessionDep, keys: KeysDep, who: Auditor,
           pseudonym: Annotated[str, Form(max_length=256)],
           reason: Annotated[str, Form(max_length=500)] = "",
           confirm: Annotated[str, Form(max_length=8)] = "") -> Response:
    p = pseudonym.strip()
    error = ""
    if not _PSEUDONYM.match(p):
        error = "A pseudonym has letters, digits, '.', '_' and '-' only."
    elif not reason.strip():
        error = "A re-identification needs a reason (a ticket or purpose, not a name)."
    elif confirm != "yes":
        error = "Confirm that this re-identification is needed for the reason given."
    if error:
        return _answer(request, "audit/_reveal.html", title="Re-identify", status=422,
                       error=error, hits=[], pseudonym="")
    try:
        hits = AuditStore(session, keys).lookup(p, reason=reason, actor=who.actor)
    except LookupRefused as exc:
        return _answer(request, "audit/_reveal.html", title="Re-identify", status=422,
                       error=exc.reason, hits=[], pseudonym="")
    return _answer(request, "audit/_reveal.html", title="Re-identify", hits=hits, pseudonym=p,
                   error="" if hits else "No mapping has this pseudonym (the request was "
                   "recorded).")


@router.post("/find", response_class=HTMLResponse)
def find(request: Request, session: SessionDep, keys: KeysDep, who: Auditor,
         kind: Annotated[str, Form(max_length=16)],
         original: Annotated[str, Form(max_length=256)],
         reason: Annotated[str, Form(max_length=500)] = "") -> Response:
    """Original identifier -> pseudonyms; the identifier never leaves this request."""
    error = ""
    if kind not in KINDS:
        error = "Choose which kind of identifier this is."
    elif not original.strip():
        error = "Enter the original identifier."
    elif not reason.strip():
        error = "A lookup by original identifier needs a reason."
    if error:
        return _answer(request, "audit/_find.html", title="Find", status=422, error=error,
                       found=[], kind=kind)
    try:
        found = AuditStore(session, keys).find_pseudonyms(kind, original.strip(), reason=reason,
                                                          actor=who.actor)
    except LookupRefused as exc:
        return _answer(request, "audit/_find.html", title="Find", status=422, error=exc.reason,
                       found=[], kind=kind)
    return _answer(request, "audit/_find.html", title="Find", found=found, kind=kind, error="")


@router.get("/log", response_class=HTMLResponse)
def log(request: Request, session: SessionDep, keys: KeysDep, _: Auditor) -> Response:
    """Every re-identification and lookup by original: who, when, why."""
    store = AuditStore(session, keys)
    events = store.events("reidentify", limit=500) + store.events("lookup-original", limit=500)
    events.sort(key=lambda e: -1 if e.seq is None else e.seq, reverse=True)
    return page(request, "audit/log.html", title="Re-identification log", events=events)


@router.get("/chain", response_class=HTMLResponse)
def chain(request: Request, session: SessionDep, keys: KeysDep, _: Auditor) -> Response:
    store = AuditStore(session, keys)
    last = store.events(limit=1)
    return page(request, "audit/chain.html", title="Audit chain", last=last[0] if last else None,
                report=None)


@router.post("/chain/verify", response_class=HTMLResponse)
def verify(request: Request, session: SessionDep, keys: KeysDep, who: Auditor) -> Response:
    """Recompute every hash and link; each finding names a sequence number and the damage."""
    report = AuditStore(session, keys).verify_chain()
    if is_htmx(request):
        return page(request, "audit/_verify.html", title="Verify", report=report)
    return page(request, "audit/chain.html", title="Audit chain", report=report, last=None)


@router.get("/instances/{sop_instance_uid}", response_class=HTMLResponse)
def instance(sop_instance_uid: str, request: Request, session: SessionDep,
             _: Auditor) -> Response:
    """Before/after for one de-identified instance: attribute names and actions, no values."""
    if not _PSEUDONYM.match(sop_instance_uid):
        raise WebForbidden("No de-identified instance has that UID.", status=404)
    record = load_instance_actions(session, sop_instance_uid)
    if record is None:
        raise WebForbidden("No record of that instance (it was de-identified before records "
                           "were kept, or the UID is not a de-identified one).", status=404)
    siblings = instances_of_study(session, record.study_instance_uid)
    return page(request, "audit/instance.html", title="Instance actions", record=record,
                groups=record.groups(), labels=GROUP_LABELS, order=GROUP_ORDER,
                siblings=siblings)
