"""What the engine hands back: the de-identified instance and what the pixel stage did.

The engine produces a ``DeidOutcome``; the pixel stage returns a ``PixelDecision``. A
``DeidOutcome`` is what the audit store records (it satisfies service.audit.types.RecordedOutcome,
whose ``Mapping`` rows it carries). None of these print a value in its repr (PHI in logs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydicom.dataset import Dataset

from service.audit.types import Mapping
from workers.deid.source import Source


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
    # Engine-private reading state (source path, pixel element offsets) that the writer needs
    # to copy unchanged pixel bytes straight from the source file. Never printed.
    source: Source | None = field(default=None, repr=False, compare=False)
