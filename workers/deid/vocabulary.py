"""The words a policy is written in: actions, options, tag patterns and the CID 7050 codes.

Everything else in the engine (the policy models, the IOD type table, the rule lookup, the
walker) speaks this vocabulary, so it sits at the bottom and imports nothing from the engine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum


class Action(str, Enum):  # noqa: UP042 - str mixin keeps YAML/JSON values plain strings
    """What happens to one attribute. PS3.15 letters are accepted as aliases (K X Z D U C)."""

    KEEP = "keep"
    REMOVE = "remove"
    EMPTY = "empty"
    DUMMY = "dummy"
    UID = "uid"
    PSEUDONYM = "pseudonym"
    SHIFT = "shift"
    CLEAN = "clean"
    SAFE_PRIVATE = "safe-private"
    X_Z = "X/Z"
    X_D = "X/D"
    X_Z_D = "X/Z/D"
    X_Z_U = "X/Z/U*"
    Z_D = "Z/D"

    @classmethod
    def _missing_(cls, value: object) -> Action | None:
        if isinstance(value, str):
            v = value.strip()
            alias = _LETTERS.get(v.upper())
            if alias is not None:
                return cls(alias)
            for m in cls:
                if m.value.lower() == v.lower():
                    return m
        return None

    @property
    def combined(self) -> bool:
        """A PS3.15 choice (X/Z, X/D, ...) resolved per element by the attribute's IOD Type."""
        return "/" in self.value


_LETTERS = {"K": "keep", "X": "remove", "Z": "empty", "D": "dummy", "U": "uid", "C": "clean"}


class Option(str, Enum):  # noqa: UP042 - as Action
    """The PS3.15 Table E.1-1 option columns (plus Clean Pixel Data, which has no column)."""

    RETAIN_SAFE_PRIVATE = "retain-safe-private"
    RETAIN_UIDS = "retain-uids"
    RETAIN_DEVICE_IDENTITY = "retain-device-identity"
    RETAIN_INSTITUTION_IDENTITY = "retain-institution-identity"
    RETAIN_PATIENT_CHARACTERISTICS = "retain-patient-characteristics"
    RETAIN_LONGITUDINAL_FULL_DATES = "retain-longitudinal-full-dates"
    RETAIN_LONGITUDINAL_MODIFIED_DATES = "retain-longitudinal-modified-dates"
    CLEAN_DESCRIPTORS = "clean-descriptors"
    CLEAN_STRUCTURED_CONTENT = "clean-structured-content"
    CLEAN_GRAPHICS = "clean-graphics"
    CLEAN_PIXEL_DATA = "clean-pixel-data"


# CID 7050 De-identification Method codes (DCM scheme), in the order they are written.
CID7050: dict[str, tuple[str, str]] = {
    "basic": ("113100", "Basic Application Confidentiality Profile"),
    Option.CLEAN_PIXEL_DATA.value: ("113101", "Clean Pixel Data Option"),
    Option.CLEAN_GRAPHICS.value: ("113103", "Clean Graphics Option"),
    Option.CLEAN_STRUCTURED_CONTENT.value: ("113104", "Clean Structured Content Option"),
    Option.CLEAN_DESCRIPTORS.value: ("113105", "Clean Descriptors Option"),
    Option.RETAIN_LONGITUDINAL_FULL_DATES.value: (
        "113106",
        "Retain Longitudinal Temporal Information Full Dates Option",
    ),
    Option.RETAIN_LONGITUDINAL_MODIFIED_DATES.value: (
        "113107",
        "Retain Longitudinal Temporal Information Modified Dates Option",
    ),
    Option.RETAIN_PATIENT_CHARACTERISTICS.value: (
        "113108",
        "Retain Patient Characteristics Option",
    ),
    Option.RETAIN_DEVICE_IDENTITY.value: ("113109", "Retain Device Identity Option"),
    Option.RETAIN_UIDS.value: ("113110", "Retain UIDs Option"),
    Option.RETAIN_SAFE_PRIVATE.value: ("113111", "Retain Safe Private Option"),
    Option.RETAIN_INSTITUTION_IDENTITY.value: ("113112", "Retain Institution Identity Option"),
}

# Every VR a rule may select by (PS3.5 6.2).
VRS = frozenset({
    "AE", "AS", "AT", "CS", "DA", "DS", "DT", "FL", "FD", "IS", "LO", "LT", "OB", "OD", "OF",
    "OL", "OV", "OW", "PN", "SH", "SL", "SQ", "SS", "ST", "SV", "TM", "UC", "UI", "UL", "UN",
    "UR", "US", "UT", "UV",
})  # fmt: skip

_TAG_RE = re.compile(r"^\(?\s*([0-9A-Fa-fXx]{4})\s*,?\s*([0-9A-Fa-fXx]{4})\s*\)?$")


@dataclass(frozen=True)
class TagPattern:
    """A tag with optional x wildcards per hex digit, e.g. (60xx,3000) or (50xx,xxxx)."""

    mask: int
    value: int
    text: str

    @classmethod
    def parse(cls, text: str) -> TagPattern:
        m = _TAG_RE.match(text.strip())
        if not m:
            raise ValueError(f"bad tag {text!r}: expected (gggg,eeee) with hex digits or x")
        digits = (m.group(1) + m.group(2)).lower()
        mask = value = 0
        for ch in digits:
            mask <<= 4
            value <<= 4
            if ch != "x":
                mask |= 0xF
                value |= int(ch, 16)
        return cls(mask, value, f"({digits[:4]},{digits[4:]})")

    @property
    def exact(self) -> bool:
        return self.mask == 0xFFFFFFFF

    @property
    def specificity(self) -> int:
        """Fixed bits: a pattern with more fixed digits wins over a looser one."""
        return bin(self.mask).count("1")

    def matches(self, tag: int) -> bool:
        return (tag & self.mask) == self.value
