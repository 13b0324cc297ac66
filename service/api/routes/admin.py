"""DICOM edge administration: the gateway's own AE, PACS nodes, the calling-AE allow-list, and
C-ECHO. Admin only: these decide where identified data may come from and go to.

The operations are ``service.dicom.admin``'s, the same ones ``deidgate ae`` and ``deidgate pacs``
run; this module only maps them to HTTP. Changes apply without a restart (the database is the
live configuration), and each is appended to the audit chain in the same transaction with the
caller's token name: who may send to the gateway and where it pulls from is for auditors to see.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response
from sqlalchemy.orm import Session

from service.api.deps import KeysDep, SessionDep, SettingsDep, require_role
from service.api.errors import ApiError
from service.api.openapi import Responses, error_response
from service.api.schemas import (
    AE_TITLE,
    NODE_NAME,
    AllowedIn,
    AllowedOut,
    EchoOut,
    LocalAEOut,
    LocalAEUpdate,
    NodeCreate,
    NodeIn,
    NodeOut,
    Removed,
)
from service.audit.store import AuditStore
from service.core.errors import ConfigurationError
from service.core.keys import SiteKeys
from service.core.security import Principal, Role
from service.dicom import admin as ops
from service.dicom.scu import echo as c_echo
from service.dicom.tls import DicomTlsFiles

router = APIRouter(prefix="/admin", tags=["administration"])

Admin = Annotated[Principal, Depends(require_role(Role.admin))]
NodeName = Annotated[str, Path(pattern=NODE_NAME)]
CallingAE = Annotated[str, Path(min_length=1, max_length=16, pattern=AE_TITLE)]
NO_NODE: Responses = {404: error_response("no PACS node with this name")}
PINNED: Responses = {409: error_response("the certificate pin belongs to another AE title")}


def _refusal(exc: ConfigurationError) -> ApiError:
    if isinstance(exc, ops.UnknownNode):
        return ApiError(404, exc.code, exc.reason)
    if isinstance(exc, ops.DuplicateNode | ops.PinConflict):
        return ApiError(409, exc.code, exc.reason)
    return ApiError(422, exc.code, exc.reason)


def _record(session: Session, keys: SiteKeys, who: Principal, kind: str, **details: object) -> None:
    AuditStore(session, keys).log_event(kind, actor=who.actor, details=details)


@router.get("/ae", response_model=LocalAEOut, summary="The gateway's own AE")
def get_ae(session: SessionDep, settings: SettingsDep, _: Admin) -> LocalAEOut:
    """admin."""
    return LocalAEOut.model_validate(ops.get_local_ae(session, settings))


@router.patch("/ae", response_model=LocalAEOut, summary="Change the gateway's own AE")
def set_ae(
    body: LocalAEUpdate, session: SessionDep, settings: SettingsDep, keys: KeysDep, who: Admin
) -> LocalAEOut:
    """admin. The listener picks up a new AE title or port when it next (re)binds."""
    changes = body.model_dump(exclude_none=True)
    try:
        cfg = ops.set_local_ae(session, settings, **changes)
    except ConfigurationError as exc:
        raise _refusal(exc) from None
    if changes:
        _record(session, keys, who, "dicom.local-ae-changed", **changes)
    return LocalAEOut.model_validate(cfg)


@router.get("/nodes", response_model=list[NodeOut], summary="PACS nodes")
def nodes(session: SessionDep, _: Admin) -> list[NodeOut]:
    """admin."""
    return [NodeOut.model_validate(n) for n in ops.list_nodes(session)]


@router.post(
    "/nodes", status_code=201, response_model=NodeOut, summary="Add a PACS node",
    responses={409: error_response("a node with this name exists, or the certificate pin "
                                   "belongs to another AE title")},
)
def add_node(body: NodeCreate, session: SessionDep, keys: KeysDep, who: Admin) -> NodeOut:
    """admin. A name already in use -> 409."""
    try:
        node = ops.add_node(session, body.name, **body.model_dump(exclude={"name"}))
    except ConfigurationError as exc:
        raise _refusal(exc) from None
    _record(session, keys, who, "dicom.node-added", **body.model_dump())
    return NodeOut.model_validate(node)


@router.get("/nodes/{name}", response_model=NodeOut, summary="One PACS node", responses=NO_NODE)
def node(name: NodeName, session: SessionDep, _: Admin) -> NodeOut:
    """admin."""
    try:
        return NodeOut.model_validate(ops.get_node(session, name))
    except ConfigurationError as exc:
        raise _refusal(exc) from None


@router.put(
    "/nodes/{name}", response_model=NodeOut, summary="Replace a PACS node's settings",
    responses={**NO_NODE, **PINNED},
)
def replace_node(
    name: NodeName, body: NodeIn, session: SessionDep, keys: KeysDep, who: Admin
) -> NodeOut:
    """admin. Remove and add in one transaction: a refused value leaves the node unchanged."""
    try:
        ops.remove_node(session, name)
        node = ops.add_node(session, name, **body.model_dump())
    except ConfigurationError as exc:
        session.rollback()
        raise _refusal(exc) from None
    _record(session, keys, who, "dicom.node-replaced", name=name, **body.model_dump())
    return NodeOut.model_validate(node)


@router.delete(
    "/nodes/{name}", status_code=204, summary="Remove a PACS node", responses=NO_NODE
)
def remove_node(name: NodeName, session: SessionDep, keys: KeysDep, who: Admin) -> Response:
    """admin."""
    try:
        ops.remove_node(session, name)
    except ConfigurationError as exc:
        raise _refusal(exc) from None
    _record(session, keys, who, "dicom.node-removed", name=name)
    return Response(status_code=204)


@router.post(
    "/nodes/{name}/echo", response_model=EchoOut, summary="C-ECHO a PACS node", responses=NO_NODE
)
def echo(
    name: NodeName,
    session: SessionDep,
    settings: SettingsDep,
    _: Admin,
    timeout: Annotated[float, Query(gt=0, le=60, description="seconds")] = 10.0,
) -> EchoOut:
    """admin. Association, C-ECHO and release from the gateway's own AE title; answers with
    the round-trip time or the exact failure (refused, timed out, rejected with reason)."""
    try:
        node = ops.get_node(session, name)
        local = ops.get_local_ae(session, settings)
        tls_files = DicomTlsFiles.from_settings(settings)
    except ConfigurationError as exc:
        raise _refusal(exc) from None
    # Release the transaction (SQLite's write lock if the local AE was just seeded) before
    # waiting on the network.
    session.commit()
    return EchoOut.model_validate(c_echo(node, local.ae_title, timeout=timeout,
                                         tls_files=tls_files))


@router.get("/allowlist", response_model=list[AllowedOut], summary="Calling AEs allowed in")
def allowlist(session: SessionDep, _: Admin) -> list[AllowedOut]:
    """admin."""
    return [AllowedOut.model_validate(a) for a in ops.list_allowed(session)]


@router.post(
    "/allowlist", status_code=201, response_model=AllowedOut, summary="Allow a calling AE",
    responses=PINNED,
)
def allow(body: AllowedIn, session: SessionDep, keys: KeysDep, who: Admin) -> AllowedOut:
    """admin. Idempotent; ``host`` pins the AE title to one peer address. TLS fields given
    replace the entry's DICOM TLS policy (all of them: left-out ones take their defaults);
    none given keeps it."""
    tls = body.model_dump(include=set(ops.TLS_FIELDS), exclude_unset=True)
    if tls:
        tls = body.model_dump(include=set(ops.TLS_FIELDS))
    try:
        entry = ops.allow(session, body.ae_title, body.host, **tls)
    except ConfigurationError as exc:
        raise _refusal(exc) from None
    _record(session, keys, who, "dicom.caller-allowed", ae_title=entry.ae_title, host=entry.host,
            tls_mode=entry.tls_mode, tls_pin_sha256=entry.tls_pin_sha256,
            tls_pin_name=entry.tls_pin_name, tls_allow_plain=entry.tls_allow_plain)
    return AllowedOut.model_validate(entry)


@router.delete(
    "/allowlist/{calling_ae}", response_model=Removed, summary="Disallow a calling AE",
    responses={404: error_response("the calling AE title is not on the allow-list")},
)
def disallow(calling_ae: CallingAE, session: SessionDep, keys: KeysDep, who: Admin) -> Removed:
    """admin. Removes every entry for the title (all pinned hosts); none -> 404."""
    try:
        n = ops.disallow(session, calling_ae)
    except ConfigurationError as exc:
        raise _refusal(exc) from None
    if n == 0:
        raise ApiError(404, "allowlist-unknown", "that calling AE title is not on the allow-list")
    _record(session, keys, who, "dicom.caller-disallowed", ae_title=calling_ae.strip(), removed=n)
    return Removed(removed=n)
