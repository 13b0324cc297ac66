"""The audit trail: mapping log queries, re-identification, the event log, chain verification.

Roles: ``auditor`` for everything; ``admin`` may additionally read the chain verification
status (operators must notice a tampered log without being able to re-identify anyone).
Re-identification is the only place the API returns original identifiers. It is a POST with
the pseudonym and a mandatory reason in the body (never in a URL), and the audit store commits
the "reidentify" event, with the caller's token name as actor, before decrypting anything.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response

from service.api.deps import KeysDep, SessionDep, require_role
from service.api.errors import ApiError
from service.api.openapi import error_response
from service.api.schemas import (
    AuditEventOut,
    ChainFinding,
    ChainStatus,
    LookupHit,
    LookupRequest,
    LookupResult,
    MappingEntry,
)
from service.audit.store import AuditStore, LookupRefused
from service.core.security import Principal, Role

router = APIRouter(prefix="/audit", tags=["audit"])

Auditor = Annotated[Principal, Depends(require_role(Role.auditor))]
ChainReader = Annotated[Principal, Depends(require_role(Role.auditor, Role.admin))]
Pseudonym = Annotated[
    str, Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._-]+$", description="pseudonym")
]


@router.get(
    "/mappings/{pseudonym}",
    response_model=list[MappingEntry],
    summary="Mapping log entries for one pseudonym",
)
def mappings(
    pseudonym: Pseudonym, session: SessionDep, keys: KeysDep, _: Auditor
) -> list[MappingEntry]:
    """auditor. Provenance of a pseudonym (kind, policy, source, job, when); no originals, so
    no reason is needed and nothing is logged."""
    rows = AuditStore(session, keys).mappings(pseudonym)
    return [MappingEntry.model_validate(r) for r in rows]


@router.get(
    "/patients/{pseudonym}/mappings",
    response_model=list[MappingEntry],
    summary="Every mapping recorded for one patient pseudonym",
)
def patient_mappings(
    pseudonym: Pseudonym, session: SessionDep, keys: KeysDep, _: Auditor
) -> list[MappingEntry]:
    """auditor. All studies, series and instances de-identified for the patient pseudonym."""
    rows = AuditStore(session, keys).mappings(patient=pseudonym)
    return [MappingEntry.model_validate(r) for r in rows]


@router.post(
    "/lookup", response_model=LookupResult, summary="Re-identify a pseudonym",
    responses={404: error_response("no mapping has this pseudonym (the request is recorded)")},
)
def lookup(
    body: LookupRequest, response: Response, session: SessionDep, keys: KeysDep, who: Auditor
) -> LookupResult:
    """auditor. Returns the original identifiers behind the pseudonym. The reason is
    mandatory and is recorded, with the caller as actor, before anything is decrypted; an
    unknown pseudonym is recorded too (someone asked) and answers 404."""
    try:
        hits = AuditStore(session, keys).lookup(body.pseudonym, reason=body.reason, actor=who.actor)
    except LookupRefused as exc:
        raise ApiError(422, exc.code, exc.reason) from None
    if not hits:
        raise ApiError(404, "pseudonym-unknown", "no mapping has this pseudonym")
    response.headers["Cache-Control"] = "no-store"  # identities must not linger in caches
    return LookupResult(
        pseudonym=body.pseudonym,
        actor=who.actor,
        matches=[LookupHit(kind=k, original=o) for k, o in hits],
    )


@router.get(
    "/reidentifications",
    response_model=list[AuditEventOut],
    summary="Every re-identification: who, when, which pseudonym, why",
)
def reidentifications(session: SessionDep, keys: KeysDep, _: Auditor) -> list[AuditEventOut]:
    """auditor."""
    return [AuditEventOut.model_validate(e) for e in AuditStore(session, keys).reidentifications()]


@router.get("/events", response_model=list[AuditEventOut], summary="The audit event log")
def events(
    session: SessionDep,
    keys: KeysDep,
    _: Auditor,
    kind: Annotated[
        str | None, Query(max_length=32, pattern=r"^[a-z0-9._-]+$", description="event kind")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="the newest N events")] = 100,
) -> list[AuditEventOut]:
    """auditor. Oldest first within the newest ``limit``; details hold no PHI."""
    rows = AuditStore(session, keys).events(kind, limit=limit)
    return [AuditEventOut.model_validate(e) for e in rows]


@router.get("/chain", response_model=ChainStatus, summary="Verify the hash-chained audit log")
def chain(session: SessionDep, keys: KeysDep, _: ChainReader) -> ChainStatus:
    """auditor, admin. Recomputes every hash and link; findings name sequence numbers and the
    kind of damage (edited, deleted, reordered), never event contents."""
    report = AuditStore(session, keys).verify_chain()
    return ChainStatus(
        ok=report.ok,
        events=report.events,
        head_seq=report.head_seq,
        first_bad_seq=report.first_bad_seq,
        findings=[ChainFinding.model_validate(f) for f in report.findings],
    )
