"""Response and request bodies that belong to the API itself (jobs, DICOM admin and audit reuse
their own areas' models where those are already PHI-free).

Separate request and response models keep secrets out of responses: nothing here can carry a
token, and only the audit lookup result (auditors only) carries original identifiers.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from service.core.security import Role
from service.db.base import as_utc

Category = Literal["likely-normal", "standard", "priority"]


class ErrorDetail(BaseModel):
    code: str = Field(description="stable machine-readable slug")
    message: str = Field(description="what went wrong, for people; never contains PHI")


class ErrorBody(BaseModel):
    error: ErrorDetail


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    database: Literal["ok", "unreachable"]
    version: str


class WhoAmI(BaseModel):
    name: str
    role: Role
    prefix: str = Field(description="non-secret token prefix, as shown by `deidgate token list`")


class _UtcModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    @field_validator("*", mode="after")
    @classmethod
    def _utc(cls, v: object) -> object:
        return as_utc(v) if isinstance(v, datetime) else v


class WorklistItem(_UtcModel):
    rank: int = Field(description="1 = read first")
    exam: str = Field(description="pseudonymous StudyInstanceUID")
    patient_pseudonym: str
    score: float = Field(description="model output; higher = more suspicious")
    category: Category
    model_version: str
    scored_at: datetime


class Worklist(BaseModel):
    total: int = Field(description="entries matching the filter, across all pages")
    limit: int
    offset: int
    items: list[WorklistItem]


class MappingEntry(_UtcModel):
    """A mapping log row as auditors query it: provenance, never the original value."""

    kind: str
    pseudonym: str
    patient_pseudonym: str | None
    policy_name: str
    policy_version: str
    source: str
    job_id: str | None
    created_at: datetime


class LookupRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    pseudonym: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._-]+$")
    reason: str = Field(
        min_length=10,
        max_length=500,
        description="why the original identity is needed (ticket, protocol); recorded verbatim",
    )

    @field_validator("reason")
    @classmethod
    def _reason_has_words(cls, v: str) -> str:
        if not v.strip() or len(v.split()) < 2:
            raise ValueError("give a reason of at least two words (ticket, protocol, purpose)")
        return v.strip()


class LookupHit(BaseModel):
    kind: str
    original: str


class LookupResult(BaseModel):
    pseudonym: str
    actor: str = Field(description="who this lookup was recorded against in the audit log")
    matches: list[LookupHit]


class ChainFinding(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    seq: int
    problem: str = Field(description="edited | deleted | reordered | forked | unanchored | head")
    detail: str


class ChainStatus(BaseModel):
    ok: bool = Field(description="true when every hash and link verifies")
    events: int
    head_seq: int
    first_bad_seq: int | None
    findings: list[ChainFinding]


class AuditEventOut(_UtcModel):
    seq: int | None = Field(description="null only when the stored value is unreadable")
    at: datetime | None = Field(description="null only when the stored value is unreadable")
    kind: str
    actor: str
    details: dict[str, Any] | None = Field(
        description="pseudonyms, counts and codes; never PHI; null when unreadable")
    unreadable: list[str] = Field(
        default_factory=list,
        description="columns edited past reading (the chain check reports the row as edited)")


# --- DICOM administration (mirrors service.dicom.admin's dataclasses) ---------------------------


class LocalAEOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    ae_title: str
    host: str
    port: int
    max_pdu: int


class LocalAEUpdate(BaseModel):
    """Only the fields given change (like ``deidgate ae set``)."""

    model_config = ConfigDict(extra="forbid")

    ae_title: str | None = Field(None, max_length=16)
    host: str | None = Field(None, max_length=255)
    port: int | None = None
    max_pdu: int | None = None


class NodeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ae_title: str = Field(max_length=16)
    host: str = Field(max_length=255)
    port: int
    retrieve: Literal["move", "get"] = "move"
    max_associations: int = 2


class NodeCreate(NodeIn):
    name: str = Field(max_length=64, description="letters, digits, '_', '.', '-'")


class NodeOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    ae_title: str
    host: str
    port: int
    retrieve: Literal["move", "get"]
    max_associations: int


class AllowedIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ae_title: str = Field(max_length=16, description="calling AE title")
    host: str | None = Field(None, max_length=64, description="pin to this IP address")


class AllowedOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    ae_title: str
    host: str | None


class Removed(BaseModel):
    removed: int


class EchoOut(BaseModel):
    """A C-ECHO outcome. A failed echo is a result (200), not an API error."""

    model_config = ConfigDict(from_attributes=True)

    ok: bool
    rtt_ms: float | None = Field(description="association + C-ECHO + release, milliseconds")
    failure: str | None = Field(
        description="refused | timed-out | unreachable | rejected | aborted | status"
    )
    detail: str
