"""What the audit store takes in and gives out, written where the store lives.

The engine (workers/deid) produces outcomes that satisfy ``RecordedOutcome`` and builds
``Mapping`` rows from this module; the store never imports the engine, so the API process can
query and verify the audit trail without loading it. None of these types may print an original
identifier in its repr (PHI in logs): ``Mapping.original`` is excluded from repr.
"""

from __future__ import annotations

from collections.abc import Sequence, Sized
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol, get_args

# In the order the store writes a recorded instance's rows.
MappingKind = Literal["patient", "study", "series", "instance", "accession", "uid"]
MAPPING_KINDS: tuple[MappingKind, ...] = get_args(MappingKind)


@dataclass(frozen=True)
class Mapping:
    """original -> pseudonym, written to the audit database with the instance's outcome."""

    kind: MappingKind
    original: str = field(repr=False)
    pseudonym: str = ""


class PixelSummary(Protocol):
    """What the "deidentified" event says about the pixel stage: its action, how many regions."""

    @property
    def action(self) -> str: ...

    @property
    def regions(self) -> Sized: ...


class RecordedOutcome(Protocol):
    """The part of a de-identified instance the store records (pseudonyms and provenance)."""

    @property
    def mappings(self) -> Sequence[Mapping]: ...

    @property
    def patient_pseudonym(self) -> str: ...

    @property
    def study_instance_uid(self) -> str: ...

    @property
    def series_instance_uid(self) -> str: ...

    @property
    def sop_instance_uid(self) -> str: ...

    @property
    def sop_class_uid(self) -> str: ...

    @property
    def policy_name(self) -> str: ...

    @property
    def policy_version(self) -> str: ...

    @property
    def pixel(self) -> PixelSummary | None: ...


@dataclass(frozen=True)
class MappingInfo:
    """A mapping row as auditors see it: no original, no ciphertext, no lookup hash."""

    kind: str
    pseudonym: str
    patient_pseudonym: str | None
    policy_name: str
    policy_version: str
    source: str
    job_id: str | None
    created_at: datetime


@dataclass(frozen=True)
class EventView:
    """One audit event as read back (details hold pseudonyms, counts and codes, never PHI).

    A row someone edited past reading (junk or NULL in a column, found after the append-only
    triggers were dropped) is still listed: the columns that could not be read are None (or "")
    and named in ``unreadable``; ``audit verify`` names it as edited."""

    seq: int | None
    at: datetime | None
    kind: str
    actor: str
    details: dict[str, Any] | None
    unreadable: tuple[str, ...] = ()
