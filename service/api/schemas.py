"""Response and request bodies that belong to the API itself (jobs, DICOM admin and audit reuse
their own areas' models where those are already PHI-free).

Separate request and response models keep secrets out of responses: nothing here can carry a
token, and only the audit lookup result (auditors only) carries original identifiers.
"""

from __future__ import annotations

import re
from ipaddress import ip_address
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    WithJsonSchema,
    field_validator,
)

from service.core.security import Role

Category = Literal["likely-normal", "standard", "priority"]

# Request constraints are written into the OpenAPI document (so what it admits is accepted)
# with explicit ASCII classes, which Python, pydantic and JSON Schema read alike. They match
# what service.dicom.admin enforces for the CLI too, only stated up front.
AE_TITLE = r"^[\x20-\x5b\x5d-\x7e]*[\x21-\x5b\x5d-\x7e][\x20-\x5b\x5d-\x7e]*$"  # no backslash
HOST = r"^[A-Za-z0-9._:%-]+$"  # a host name or an IPv4/IPv6 address
NODE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
# At least two words: a run of spaces between two printable ASCII characters.
_TWO_WORDS = re.compile(r"[!-~] +[!-~]")


def _matching(pattern: str, max_len: int, message: str) -> AfterValidator:
    """Refuse what the documented pattern refuses, saying what the field must be."""
    rx = re.compile(pattern)

    def check(value: str) -> str:
        if len(value) > max_len or not rx.fullmatch(value):
            raise ValueError(message)
        return value

    return AfterValidator(check)


def _documented(pattern: str, max_len: int, description: str) -> WithJsonSchema:
    return WithJsonSchema({"type": "string", "pattern": pattern, "maxLength": max_len,
                           "minLength": 1, "description": description})


AeTitle = Annotated[
    str,
    _matching(AE_TITLE, 16, "AE title must be 1-16 printable ASCII characters, no backslash"),
    _documented(AE_TITLE, 16, "AE title: 1-16 printable ASCII characters, no backslash"),
]
Host = Annotated[
    str,
    _matching(HOST, 255, "host must be a host name or an IP address"),
    _documented(HOST, 255, "host name or IP address"),
]
def _ip_address(value: str) -> str:
    # No scope id: the JSON Schema "ipv6" format has none, and a pin compares plain addresses.
    try:
        if "%" in value:
            raise ValueError(value)
        return str(ip_address(value))
    except ValueError:
        raise ValueError("host must be an IP address (IPv4 or IPv6)") from None


IpAddress = Annotated[
    str,
    AfterValidator(_ip_address),
    WithJsonSchema({"anyOf": [{"type": "string", "format": "ipv4"},
                              {"type": "string", "format": "ipv6"}]}),
]
NodeName = Annotated[
    str,
    _matching(NODE_NAME, 64, "node name: letters, digits, '_', '.', '-' (max 64)"),
    _documented(NODE_NAME, 64, "letters, digits, _ . - (max 64)"),
]


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


class _FromRows(BaseModel):
    """Timestamps are ``AwareDatetime``: the database layer reads every one back in UTC
    (``service.db.base.UtcDateTime``), and a naive one is a bug to refuse, not to print
    without the offset RFC 3339 requires."""

    model_config = ConfigDict(from_attributes=True)


class WorklistView(BaseModel):
    """One scored view of an exam (pseudonymous UIDs)."""

    sop: str = Field(description="pseudonymous SOPInstanceUID")
    series: str = Field(description="pseudonymous SeriesInstanceUID")
    laterality: str = Field(description="L or R")
    view: str = Field(description="CC, MLO, ...")
    score: float | None = Field(description="the view's model output")


class _ExamFields(_FromRows):
    exam: str = Field(description="pseudonymous StudyInstanceUID")
    patient_pseudonym: str
    score: float = Field(description="model output; higher = more suspicious")
    category: Category = Field(description="by the model card's thresholds, as stored when scored")
    model_name: str | None = Field(description="null for rows scored before results were kept")
    model_version: str
    demo: bool = Field(description="true: synthetic demo model, not for clinical use")
    views: list[WorklistView]
    complete: bool | None = Field(description="the four standard views were present")
    note: str | None = Field(description="e.g. scored with 3 of 4 views after the quiet period")
    state: Literal["unread", "read"]
    read_at: AwareDatetime | None
    read_by: str | None = Field(description="who marked it read (principal name)")
    arrived_at: AwareDatetime = Field(description="last view de-identified: waiting starts")
    waiting_s: int = Field(description="seconds waited (until read, for a read exam)")
    over_ceiling: bool = Field(description="unread and waiting longer than the maximum wait: "
                               "ranked first whatever its score")
    scored_at: AwareDatetime


class WorklistItem(_ExamFields):
    rank: int = Field(description="1 = read first")


class Worklist(BaseModel):
    total: int = Field(description="entries matching the filter, across all pages")
    over_ceiling: int = Field(description="of those, exams waiting longer than the ceiling")
    max_wait_minutes: int = Field(description="the ceiling (DEIDGATE_TRIAGE_MAX_WAIT_MINUTES)")
    as_of: AwareDatetime = Field(description="the instant this page was ranked at; pass it back "
                                 "as ?as_of= for the next page so pages never overlap or skip")
    limit: int
    offset: int
    items: list[WorklistItem]


class ExamDetail(_ExamFields):
    model_sha256: str | None
    device_uid: str | None = Field(description="IHE AI Results Device UID of the model")
    preprocessing_version: str | None
    has_accession: bool = Field(description="an accession pseudonym is recorded (reveal works)")


class ReadOut(BaseModel):
    exam: str
    state: Literal["read"]
    read_at: AwareDatetime
    read_by: str
    already_read: bool = Field(description="someone had marked it read before (kept as it was)")


def _must_confirm(value: bool) -> bool:
    if value is not True:
        raise ValueError("confirm must be true: the accession number is needed for the reason")
    return value


class RevealRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    reason: str = Field(
        min_length=10,
        max_length=500,
        description="why the accession number is needed (clinical follow-up ticket); recorded "
                    "verbatim in the audit log, so no names or identifiers",
        json_schema_extra={"pattern": _TWO_WORDS.pattern},
    )
    confirm: Annotated[bool, Strict(), AfterValidator(_must_confirm),
                       WithJsonSchema({"type": "boolean", "const": True})] = Field(
        description="must be true: the caller confirms the need")

    @field_validator("reason")
    @classmethod
    def _reason_has_words(cls, v: str) -> str:
        if not _TWO_WORDS.search(v):
            raise ValueError("give a reason of at least two words (ticket, protocol, purpose)")
        return v  # stripped by service.triage.actions.check_reason, after the same rule


class RevealResult(BaseModel):
    exam: str
    accession_number: str = Field(description="the original AccessionNumber (on record)")
    actor: str = Field(description="who this reveal was recorded against in the audit log")


class MappingEntry(_FromRows):
    """A mapping log row as auditors query it: provenance, never the original value."""

    kind: str
    pseudonym: str
    patient_pseudonym: str | None
    policy_name: str
    policy_version: str
    source: str
    job_id: str | None
    created_at: AwareDatetime


class LookupRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    pseudonym: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._-]+$")
    reason: str = Field(
        min_length=10,
        max_length=500,
        description="why the original identity is needed (ticket, protocol); recorded verbatim",
        json_schema_extra={"pattern": _TWO_WORDS.pattern},
    )

    @field_validator("reason")
    @classmethod
    def _reason_has_words(cls, v: str) -> str:
        # The schema's own pattern decides (so the document and the server agree), with a
        # message that says what is missing.
        if not _TWO_WORDS.search(v):
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


class AuditEventOut(_FromRows):
    seq: int | None = Field(description="null only when the stored value is unreadable")
    at: AwareDatetime | None = Field(description="null only when the stored value is unreadable")
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

    ae_title: AeTitle | None = None
    host: Host | None = None
    port: int | None = Field(None, ge=1, le=65535)
    max_pdu: int | None = Field(None, ge=16_384, le=1 << 30, description="bytes")


class NodeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ae_title: AeTitle
    host: Host
    port: int = Field(ge=1, le=65535)
    retrieve: Literal["move", "get"] = "move"
    max_associations: int = Field(2, ge=1, le=64)


class NodeCreate(NodeIn):
    name: NodeName


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

    ae_title: AeTitle = Field(description="calling AE title")
    host: IpAddress | None = Field(None, description="pin to this IP address")


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
