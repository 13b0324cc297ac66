"""``/admin``: the DICOM edge (local AE, PACS nodes with Echo, the calling-AE allow-list and
the associations it refused), queue and worker health, and the de-identification policies.

Admin only. The operations are ``service.dicom.admin``'s, the same ones the CLI and the REST
API run, and each change is appended to the audit chain with the signed-in actor, as the API
does. Forms post and redirect back (no resubmission on reload); Echo and policy validation
answer with a fragment that htmx puts beside the button.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.api.deps import KeysDep, SessionDep, SettingsDep
from service.audit.store import AuditStore
from service.core.config import Settings
from service.core.errors import ConfigurationError, DeidgateError
from service.core.keys import SiteKeys
from service.core.security import Role
from service.db.models.dicom import AssociationAttempt
from service.dicom import admin as ops
from service.dicom.scu import echo as c_echo
from service.dicom.tls import DicomTlsFiles
from service.web import health
from service.web.deps import WebForbidden, require_web_role
from service.web.render import is_htmx, page
from service.web.sessions import WebPrincipal

router = APIRouter(prefix="/admin", include_in_schema=False)
Admin = Annotated[WebPrincipal, Depends(require_web_role(Role.admin))]
_NODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_POLICY_BYTES = 1 << 20
DONE = {
    "ae": "Local AE settings saved.",
    "node-added": "PACS node added.",
    "node-removed": "PACS node removed.",
    "allowed": "Calling AE allowed.",
    "disallowed": "Calling AE removed from the allow-list.",
}


def _record(session: Session, keys: SiteKeys, who: WebPrincipal, kind: str,
            **details: object) -> None:
    AuditStore(session, keys).log_event(kind, actor=who.actor, details=details)


def _overview(request: Request, session: Session, settings: Settings, *, error: str = "",
              status: int = 200, form: dict[str, str] | None = None) -> HTMLResponse:
    rejected = list(session.scalars(select(AssociationAttempt)
                                    .order_by(AssociationAttempt.at.desc()).limit(25)))
    done = DONE.get(request.query_params.get("done", ""), "")
    return page(request, "admin/index.html", title="Administration", status=status,
                local=ops.get_local_ae(session, settings), nodes=ops.list_nodes(session),
                allowed=ops.list_allowed(session), rejected=rejected, error=error, done=done,
                form=form or {})


def _back(done: str) -> RedirectResponse:
    return RedirectResponse(f"/admin?done={done}", status_code=303)


@router.get("", response_class=HTMLResponse)
def overview(request: Request, session: SessionDep, settings: SettingsDep,
             _: Admin) -> Response:
    return _overview(request, session, settings)


@router.post("/ae")
def set_ae(
    request: Request, session: SessionDep, settings: SettingsDep, keys: KeysDep, who: Admin,
    ae_title: Annotated[str, Form(max_length=64)], host: Annotated[str, Form(max_length=255)],
    port: Annotated[str, Form(max_length=8)], max_pdu: Annotated[str, Form(max_length=12)],
) -> Response:
    try:
        if not port.strip().isdigit() or not max_pdu.strip().isdigit():
            raise ops.InvalidSetting("port and max PDU must be whole numbers")
        changes = {"ae_title": ae_title, "host": host, "port": int(port),
                   "max_pdu": int(max_pdu)}
        ops.set_local_ae(session, settings, **changes)  # type: ignore[arg-type]
    except ConfigurationError as exc:
        session.rollback()
        return _overview(request, session, settings, error=exc.reason, status=422)
    _record(session, keys, who, "dicom.local-ae-changed", **changes)
    return _back("ae")


@router.post("/nodes")
def add_node(
    request: Request, session: SessionDep, settings: SettingsDep, keys: KeysDep, who: Admin,
    name: Annotated[str, Form(max_length=64)], ae_title: Annotated[str, Form(max_length=64)],
    host: Annotated[str, Form(max_length=255)], port: Annotated[str, Form(max_length=8)],
    retrieve: Annotated[str, Form(max_length=8)] = "move",
    max_associations: Annotated[str, Form(max_length=4)] = "2",
) -> Response:
    form = {"name": name, "ae_title": ae_title, "host": host, "port": port,
            "retrieve": retrieve, "max_associations": max_associations}
    try:
        if not port.strip().isdigit() or not max_associations.strip().isdigit():
            raise ops.InvalidSetting("port and max associations must be whole numbers")
        node = ops.add_node(session, name.strip(), ae_title=ae_title, host=host,
                            port=int(port), retrieve=retrieve,
                            max_associations=int(max_associations))
    except ConfigurationError as exc:
        session.rollback()
        return _overview(request, session, settings, error=exc.reason, status=422, form=form)
    _record(session, keys, who, "dicom.node-added", name=node.name, ae_title=node.ae_title,
            host=node.host, port=node.port, retrieve=node.retrieve,
            max_associations=node.max_associations)
    return _back("node-added")


def _node_name(name: str) -> str:
    if not _NODE.match(name):
        raise WebForbidden("No such PACS node.", status=404)
    return name


@router.post("/nodes/{name}/remove")
def remove_node(name: str, request: Request, session: SessionDep, settings: SettingsDep,
                keys: KeysDep, who: Admin) -> Response:
    try:
        ops.remove_node(session, _node_name(name))
    except ConfigurationError as exc:
        return _overview(request, session, settings, error=exc.reason, status=404)
    _record(session, keys, who, "dicom.node-removed", name=name)
    return _back("node-removed")


@router.post("/nodes/{name}/echo", response_class=HTMLResponse)
def echo(name: str, request: Request, session: SessionDep, settings: SettingsDep,
         _: Admin) -> Response:
    """C-ECHO from the gateway's own AE; the round trip in ms or the exact failure."""
    try:
        node = ops.get_node(session, _node_name(name))
        local = ops.get_local_ae(session, settings)
    except ConfigurationError as exc:
        raise WebForbidden(exc.reason, status=404) from None
    session.commit()  # release the transaction before waiting on the network
    result = c_echo(node, local.ae_title, timeout=10.0,
                    tls_files=DicomTlsFiles.from_settings(settings))
    if is_htmx(request):
        return page(request, "admin/_echo.html", title="Echo", node=node, result=result)
    return page(request, "admin/echo.html", title="Echo", node=node, result=result)


@router.post("/allowlist")
def allow(request: Request, session: SessionDep, settings: SettingsDep, keys: KeysDep,
          who: Admin, ae_title: Annotated[str, Form(max_length=64)],
          host: Annotated[str, Form(max_length=64)] = "") -> Response:
    try:
        entry = ops.allow(session, ae_title, host.strip() or None)
    except ConfigurationError as exc:
        session.rollback()
        return _overview(request, session, settings, error=exc.reason, status=422,
                         form={"allow_ae": ae_title, "allow_host": host})
    _record(session, keys, who, "dicom.caller-allowed", ae_title=entry.ae_title, host=entry.host)
    return _back("allowed")


@router.post("/allowlist/remove")
def disallow(request: Request, session: SessionDep, settings: SettingsDep, keys: KeysDep,
             who: Admin, ae_title: Annotated[str, Form(max_length=64)]) -> Response:
    try:
        n = ops.disallow(session, ae_title)
    except ConfigurationError as exc:
        return _overview(request, session, settings, error=exc.reason, status=422)
    if n == 0:
        return _overview(request, session, settings, status=404,
                         error="That calling AE title is not on the allow-list.")
    _record(session, keys, who, "dicom.caller-disallowed", ae_title=ae_title.strip(), removed=n)
    return _back("disallowed")


@router.get("/health", response_class=HTMLResponse)
def health_page(request: Request, session: SessionDep, settings: SettingsDep,
                _: Admin) -> Response:
    return page(request, "admin/health.html", title="Queues and workers",
                health=health.collect(session, settings), settings=settings)


@router.get("/policies", response_class=HTMLResponse)
def policies(request: Request, _: Admin) -> Response:
    from workers.deid.policy import shipped_policies

    names = sorted(shipped_policies())
    return page(request, "admin/policies.html", title="Policies", names=names)


@router.get("/policies/{name}", response_class=HTMLResponse)
def policy(name: str, request: Request, _: Admin) -> Response:
    from workers.deid.policy import load_policy, shipped_policies

    path = shipped_policies().get(name)
    if path is None:
        raise WebForbidden("No shipped policy has that name.", status=404)
    try:
        loaded, problem = load_policy(name), ""
    except DeidgateError as exc:
        loaded, problem = None, exc.reason
    return page(request, "admin/policy.html", title="Policy", name=name, policy=loaded,
                problem=problem, lines=Path(path).read_text(encoding="utf-8").splitlines())


_PROBLEM = re.compile(r"^.*?uploaded\.yaml:(\d+|\?|None): (.*)$", re.S)


def policy_problems(reason: str) -> list[tuple[str, str]]:
    """``(line, message)`` for each problem a PolicyError lists (file paths dropped)."""
    out = []
    for part in reason.split("; "):
        m = _PROBLEM.match(part)
        out.append((m.group(1) if m and m.group(1) not in ("None",) else "?",
                    m.group(2) if m else part.split("uploaded.yaml")[-1].lstrip(": ")))
    return out


@router.post("/policies/validate", response_class=HTMLResponse)
async def validate_policy(request: Request, _: Admin, policy_file: UploadFile) -> Response:
    """Load the uploaded YAML with every layer it extends; line-numbered errors or a summary.
    The file lives only in a private temporary folder for the duration of the check."""
    from starlette.concurrency import run_in_threadpool

    data = await policy_file.read(MAX_POLICY_BYTES + 1)
    problems: list[tuple[str, str]] = []
    summary = None
    if len(data) > MAX_POLICY_BYTES:
        problems = [("?", "the file is larger than 1 MiB")]
    elif not data.strip():
        problems = [("1", "the file is empty")]
    else:
        try:
            summary = await run_in_threadpool(_load_uploaded, data)
        except DeidgateError as exc:
            problems = policy_problems(exc.reason)
    template = "admin/_validate.html" if is_htmx(request) else "admin/validate.html"
    return page(request, template, title="Policy check", problems=problems, summary=summary,
                status=200 if summary else 422)


def _load_uploaded(data: bytes) -> dict[str, object]:
    from workers.deid.policy import load_policy

    with tempfile.TemporaryDirectory(prefix="deidgate-policy-") as tmp:
        path = Path(tmp) / "uploaded.yaml"
        path.write_bytes(data)
        p = load_policy(path)
    return {"name": p.name, "version": p.version, "layers": list(p.layers),
            "rules": len(p.rules), "options": sorted(o.value for o in p.options)}
