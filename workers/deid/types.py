"""Typed values passed between the de-identification stages, the audit store and the callers.

These are the contracts between modules: the engine produces a ``DeidOutcome``; the pixel stage
returns a ``PixelDecision``; the audit store consumes ``Mapping`` rows. None of them may print
original identifiers in its repr (PHI in logs): ``Mapping.original`` is excluded from repr.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydicom.dataset import Dataset

MappingKind = Literal["patient", "study", "series", "instance", "uid", "accession"]


@dataclass(frozen=True)
class Mapping:
    """original -> pseudonym, written to the audit database with the instance's outcome."""

    kind: MappingKind
    original: str = field(repr=False)
    pseudonym: str = ""


@dataclass(frozen=True)
class Box:
    """A pixel rectangle (row0, col0, row1, col1), half-open, in frame coordinates."""

    row0: int
    col0: int
    row1: int
    col1: int
    frame: int = 0


@dataclass
class PixelDecision:
    """What the pixel stage did. ``new_pixel_data`` is set only when pixels changed.

    action:
      unchanged  - checked, nothing to blank; the original PixelData bytes are written as they are
      blanked    - text regions blanked; ``new_pixel_data`` holds the re-encoded value (lossless,
                   same transfer syntax where an encoder exists, else explicit VR little endian
                   with ``new_transfer_syntax`` set)
      no-pixels  - the instance has no pixel data (SR, for example)
    """

    action: Literal["unchanged", "blanked", "no-pixels"]
    regions: list[Box] = field(default_factory=list)
    new_pixel_data: bytes | None = field(default=None, repr=False)
    new_transfer_syntax: str | None = None
    detail: str = ""
    decode_count: int = 0
    encode_count: int = 0


@dataclass
class DeidOutcome:
    """The de-identified instance, ready to write, and everything the audit store records."""

    dataset: Dataset = field(repr=False)
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    patient_pseudonym: str
    mappings: list[Mapping] = field(default_factory=list)
    pixel: PixelDecision | None = None
    policy_name: str = ""
    policy_version: str = ""
    action_counts: dict[str, int] = field(default_factory=dict)
    # One workers.deid.actions.ExplainRow per element: path, tag, keyword, action, rule; no
    # values. Recorded per instance for the auditors (service.audit.instance_actions).
    explain: list[Any] = field(default_factory=list, repr=False, compare=False)
    # Engine-private reading state (source path, pixel element offsets) that Deidentifier.write
    # needs to copy unchanged pixel bytes straight from the source file. Never printed.
    source: object | None = field(default=None, repr=False, compare=False)
