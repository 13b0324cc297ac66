"""What a job request may be, what a job looks like from outside, and how the request is sealed.

``JobRequest`` carries PHI (accession numbers, patient IDs, study UIDs); it is validated strictly
with messages that name the field and position, never the value, and it is stored only sealed
(AES-GCM under the site's encryption key). ``JobView`` is what every view, log and report shows:
counts, states, pseudonymous study UIDs, and nothing that identifies a woman.
"""

from __future__ import annotations

import json
import re
from datetime import date
from typing import Annotated, Any

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from service.core.errors import DeidgateError
from service.core.keys import SiteKeys, aead_open, aead_seal
from service.db.states import DeadLetterState, JobState, StudyState
from service.dicom.uid_keys import uid_key

MAX_VALUES = 10_000
# Each rule is one regular expression, written with explicit ASCII classes so that it means the
# same to Python's ``re.fullmatch`` (which decides here) and to the OpenAPI document's JSON
# Schema ``pattern`` (which a client validates against): what the schema admits is accepted.
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
_MODALITY = re.compile(r"^[A-Z0-9_]{1,16}$")
_NODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_POLICY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_CORE = r"[^\\*?\x00-\x1f ]"  # no wildcard, backslash or control character; not a space


def _padded(max_len: int) -> re.Pattern[str]:
    """A value of at most ``max_len`` characters, space-padded as DICOM pads (spaces inside
    are allowed, the padding is dropped)."""
    inner = r"[^\\*?\x00-\x1f]"
    return re.compile(rf"^ *{_CORE}(?:{inner}{{0,{max_len - 2}}}{_CORE})? *$")


_ACCESSION = _padded(16)  # SH
_PATIENT_ID = _padded(64)  # LO
MAX_RAW = 256  # padding included
MAX_MODALITIES = 12
SELECTORS = ("accession_numbers", "patient_ids", "study_instance_uids", "query")


class InvalidJobRequest(DeidgateError):
    code = "invalid-job-request"


class JobNotFound(DeidgateError):
    code = "job-not-found"


def _string(rx: re.Pattern[str], description: str, max_len: int) -> WithJsonSchema:
    return WithJsonSchema(
        {"type": "string", "pattern": rx.pattern, "maxLength": max_len, "description": description}
    )


def _values(rx: re.Pattern[str], description: str, max_len: int) -> WithJsonSchema:
    item = {"type": "string", "pattern": rx.pattern, "maxLength": max_len}
    return WithJsonSchema({"type": "array", "items": item, "minItems": 1,
                           "maxItems": MAX_VALUES, "description": description})


class DateQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    modality: Annotated[str, _string(_MODALITY, "DICOM modality code", 16)] = "MG"
    date_from: date
    date_to: date = Field(description="on or after date_from")

    @model_validator(mode="after")
    def _check(self) -> DateQuery:
        if not _MODALITY.fullmatch(self.modality):
            raise ValueError("modality: a DICOM modality code such as MG")
        if self.date_from > self.date_to:
            raise ValueError("date_from is after date_to")
        return self


def _why(raw: str, *, max_len: int, uid: bool) -> str:
    """What is wrong with a value its rule refused, in words, without the value."""
    v = raw.strip(" ")
    if not v:
        return "empty value"
    if len(v) > max_len or len(raw) > MAX_RAW:
        return f"longer than {max_len} characters"
    if "\\" in v or "*" in v or "?" in v or any(ord(c) < 32 for c in v):
        return "contains a wildcard, backslash or control character"
    if uid:
        return "not a DICOM UID (digits and dots, no leading zeros, no spaces)"
    return "not a valid value"


def _check_values(field: str, values: list[str], rx: re.Pattern[str], *, max_len: int,
                  uid: bool = False) -> list[str]:
    if not values:
        raise ValueError(f"{field}: the list is empty")
    if len(values) > MAX_VALUES:
        raise ValueError(f"{field}: {len(values)} values; at most {MAX_VALUES} per job")
    seen: dict[str, None] = {}
    for i, raw in enumerate(values):
        if len(raw) > (max_len if uid else MAX_RAW) or not rx.fullmatch(raw):
            raise ValueError(f"{field}[{i}]: {_why(raw, max_len=max_len, uid=uid)}")
        seen.setdefault(raw.strip(" "), None)
    return list(seen)


# "Exactly one selector", for the OpenAPI document: a selector given as null counts as absent.
_ONE_SELECTOR: dict[str, Any] = {"oneOf": [
    {"required": [name], "properties": {name: {"type": "object" if name == "query" else "array"}}}
    for name in SELECTORS
]}


class JobRequest(BaseModel):
    """Exactly one selector: accession numbers, patient IDs, study UIDs or a date-range query."""

    model_config = ConfigDict(
        extra="forbid", hide_input_in_errors=True, json_schema_extra=_ONE_SELECTOR
    )

    pacs: Annotated[str, _string(_NODE, "PACS node name", 64)]
    accession_numbers: Annotated[
        list[str], _values(_ACCESSION, "accession numbers (SH, at most 16)", MAX_RAW)
    ] | None = None
    patient_ids: Annotated[
        list[str], _values(_PATIENT_ID, "patient IDs (LO, at most 64)", MAX_RAW)
    ] | None = None
    study_instance_uids: Annotated[
        list[str], _values(_UID, "study instance UIDs", 64)
    ] | None = None
    query: DateQuery | None = None
    policy: Annotated[str, _string(_POLICY, "policy name", 128)] | None = None
    destination: Annotated[str, _string(_NODE, "PACS node name", 64)] | None = None
    modalities: Annotated[list[str], WithJsonSchema({
        "type": "array", "minItems": 1, "maxItems": MAX_MODALITIES,
        "items": {"type": "string", "pattern": _MODALITY.pattern, "maxLength": 16},
        "description": "retrieve only series of these modalities (C-FIND at SERIES level, "
                       "one C-MOVE per series); default: what the policy accepts (MG for "
                       "mammography-screening)"})] | None = None

    @model_validator(mode="after")
    def _check(self) -> JobRequest:
        if self.modalities is not None:
            if not 1 <= len(self.modalities) <= MAX_MODALITIES:
                raise ValueError(f"modalities: 1 to {MAX_MODALITIES} modality codes")
            for i, m in enumerate(self.modalities):
                if not _MODALITY.fullmatch(m):
                    raise ValueError(f"modalities[{i}]: a DICOM modality code such as MG")
            self.modalities = list(dict.fromkeys(self.modalities))
        if not _NODE.fullmatch(self.pacs):
            raise ValueError("pacs: a PACS node name (letters, digits, _ . -; at most 64)")
        if self.destination is not None and not _NODE.fullmatch(self.destination):
            raise ValueError("destination: a PACS node name (letters, digits, _ . -; at most 64)")
        if self.policy is not None and not _POLICY.fullmatch(self.policy):
            raise ValueError("policy: a shipped policy name such as mammography-screening")
        given = [s for s in SELECTORS if getattr(self, s) is not None]
        if len(given) != 1:
            raise ValueError(
                "exactly one of accession_numbers, patient_ids, study_instance_uids or query "
                f"is required ({len(given)} given)"
            )
        if self.accession_numbers is not None:
            self.accession_numbers = _check_values(
                "accession_numbers", self.accession_numbers, _ACCESSION, max_len=16)
        if self.patient_ids is not None:
            self.patient_ids = _check_values(
                "patient_ids", self.patient_ids, _PATIENT_ID, max_len=64)
        if self.study_instance_uids is not None:
            self.study_instance_uids = _check_values(
                "study_instance_uids", self.study_instance_uids, _UID, max_len=64, uid=True)
        return self

    @property
    def selector(self) -> str:
        return next(s for s in SELECTORS if getattr(self, s) is not None)

    @property
    def requested(self) -> int:
        value = getattr(self, self.selector)
        return 1 if isinstance(value, DateQuery) else len(value)

    def __repr__(self) -> str:  # the values are PHI
        return f"JobRequest(pacs={self.pacs!r}, selector={self.selector!r}, n={self.requested})"

    __str__ = __repr__


def parse_job_request(data: Any) -> JobRequest:
    """Validate untrusted input; errors name field and position, never the offending value."""
    try:
        return JobRequest.model_validate(data)
    except ValidationError as exc:
        parts = []
        for err in exc.errors(include_input=False, include_url=False):
            loc = ".".join(str(p) for p in err.get("loc", ()))
            msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
            parts.append(f"{loc}: {msg}" if loc else msg)
        raise InvalidJobRequest("; ".join(parts) or "invalid job request") from None


# --- sealing: the request and original UIDs are PHI; stored only encrypted ---------------------

def seal(keys: SiteKeys, payload: Any, *, aad: str) -> bytes:
    data = json.dumps(payload, separators=(",", ":"), default=str).encode()
    return aead_seal(keys.encryption, data, aad.encode())


def unseal(keys: SiteKeys, blob: bytes, *, aad: str) -> Any:
    return json.loads(aead_open(keys.encryption, blob, aad.encode()))


def study_key(keys: SiteKeys, study_uid: str) -> str:
    """The keyed hash by which an arriving instance finds its job's study (no UID in clear);
    the same key the listener stores on ``ReceivedInstance.study_key``."""
    return uid_key(keys, study_uid)


# --- views --------------------------------------------------------------------------------------

class Counts(BaseModel):
    """``instances_refused``: received, and refused by the policy (kept in quarantine with the
    reason): not a failure. ``instances_skipped``: in series the retrieval did not move."""

    studies_found: int = 0
    studies_complete: int = 0
    studies_failed: int = 0
    studies_scored: int = 0  # studies with a triage score (any model)
    instances_expected: int = 0
    instances_received: int = 0
    instances_deidentified: int = 0
    instances_refused: int = 0
    instances_failed: int = 0
    instances_skipped: int = 0
    dead_letters: int = 0


class StudyView(BaseModel):
    index: int
    study_uid: str | None = Field(None, description="pseudonymous study UID, once known")
    state: StudyState
    expected: int | None
    received: int = 0
    deidentified: int = 0
    refused: int = 0
    failed: int = 0
    forwarded: bool = Field(False, description="sent to the job's destination node")
    scored: bool = Field(False, description="has a triage score (any model)")
    reason: str | None = None
    skipped: int = Field(0, description="instances in series the retrieval did not move")
    skipped_reason: str | None = Field(
        None, description="per skipped series: its position, count and why")


class DeadLetterView(BaseModel):
    id: int
    task: str
    reason: str
    attempts: int
    state: DeadLetterState
    created_at: AwareDatetime


class JobView(BaseModel):
    """Everything a non-auditor may see about a job: no request values, no original UIDs."""

    id: str
    state: JobState
    pacs: str
    policy: str
    destination: str | None
    selector: str
    requested: int
    modalities: list[str] | None = Field(
        None, description="the job option; null: the policy decides which series are moved")
    created_at: AwareDatetime
    updated_at: AwareDatetime
    finished_at: AwareDatetime | None
    reason: str | None
    counts: Counts
    studies: list[StudyView] = []
    dead_letters: list[DeadLetterView] = []
