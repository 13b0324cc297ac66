"""The policy's YAML schema: one strict pydantic model per section, and ``Layer`` for one file.

Strict on purpose (extra="forbid", actions and options as Enums): a typo in a policy must fail at
load with file, line and key (see yaml_lines.py), never quietly keep an attribute or switch a
stage off. Every field of ``Layer`` is optional so that layers can be merged (policy.py).
The schema is documented in policies/README.md.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydicom.datadict import tag_for_keyword

from workers.deid.vocabulary import VRS, Action, Option, TagPattern

DEIDGATE_IMPL_UID = "2.25.99370533180154640466128434406493327489"
DEIDGATE_IMPL_VERSION = "DEIDGATE_010"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)


def _block_offset(v: str) -> str:
    """A private element's offset inside its block (the low byte), as two hex digits."""
    try:
        n = int(str(v), 16)
    except ValueError:
        raise ValueError(f"element offset {v!r} is not hex") from None
    if not 0 <= n <= 0xFF:
        raise ValueError("element offset must be 00-FF (the low byte inside the block)")
    return f"{n:02x}"


class Rule(_Strict):
    """One row: exactly one selector, an action, and per-option overrides."""

    tag: str | None = None
    keyword: str | None = None
    vr: str | None = None
    private_creator: str | None = None
    element: str | None = Field(default=None, description="hex offset 00-FF inside the block")
    private: Literal[True] | None = None
    other: Literal[True] | None = None
    action: Action
    options: dict[Option, Action] = Field(default_factory=dict)
    name: str = ""
    note: str = ""
    in_std_iod: bool | None = None
    source: str | None = None

    @field_validator("tag")
    @classmethod
    def _tag(cls, v: str | None) -> str | None:
        return None if v is None else TagPattern.parse(v).text

    @field_validator("keyword")
    @classmethod
    def _keyword(cls, v: str | None) -> str | None:
        if v is not None and tag_for_keyword(v) is None:
            raise ValueError(f"unknown DICOM keyword {v!r}")
        return v

    @field_validator("vr")
    @classmethod
    def _vr(cls, v: str | None) -> str | None:
        if v is not None and v.upper() not in VRS:
            raise ValueError(f"unknown VR {v!r}")
        return None if v is None else v.upper()

    @field_validator("element")
    @classmethod
    def _element(cls, v: str | None) -> str | None:
        return None if v is None else _block_offset(v)

    @model_validator(mode="after")
    def _one_selector(self) -> Rule:
        chosen = [
            k
            for k in ("tag", "keyword", "vr", "private_creator", "private", "other")
            if getattr(self, k) is not None
        ]
        if len(chosen) != 1:
            raise ValueError(
                "a rule needs exactly one selector of tag, keyword, vr, "
                f"private_creator (+element), private, other; got {chosen or 'none'}"
            )
        if (self.private_creator is None) != (self.element is None):
            raise ValueError("private_creator and element go together")
        if self.tag is not None and TagPattern.parse(self.tag).exact:
            group = int(self.tag[1:5], 16)
            if group % 2 == 1 and self.action is Action.KEEP:
                raise ValueError("keep a private element by private_creator + element, not by tag")
        return self

    @property
    def selector_key(self) -> str:
        """Identity used to merge layers: a keyword and its tag are one selector."""
        if self.keyword is not None:
            tag = int(tag_for_keyword(self.keyword) or 0)  # validated: the keyword exists
            return f"tag:({tag >> 16:04x},{tag & 0xFFFF:04x})"
        if self.tag is not None:
            return f"tag:{self.tag}"
        if self.vr is not None:
            return f"vr:{self.vr}"
        if self.private_creator is not None:
            return f"private:{self.private_creator.strip()}:{self.element}"
        if self.private:
            return "private:*"
        return "other"

    def describe(self) -> str:
        key = self.selector_key
        return f"{key} ({self.name})" if self.name else key


class SafePrivate(_Strict):
    creator: str
    element: str
    note: str = ""

    @field_validator("element")
    @classmethod
    def _element(cls, v: str) -> str:
        return _block_offset(v)


class Refusal(_Strict):
    uid: str
    reason: str


class SopClasses(_Strict):
    accept: Literal["any-storage", "any"] | list[str] = "any-storage"
    refuse: list[Refusal] = Field(default_factory=list)
    reason: str = "SOP class not accepted by this policy"


class Dates(_Strict):
    shift_min_days: int = -3650
    shift_max_days: int = -30

    @model_validator(mode="after")
    def _range(self) -> Dates:
        if self.shift_min_days > self.shift_max_days:
            raise ValueError("shift_min_days must not exceed shift_max_days")
        if self.shift_min_days == self.shift_max_days == 0:
            raise ValueError("the date shift range must contain a non-zero day count")
        return self


class FileMeta(_Strict):
    implementation_class_uid: str = DEIDGATE_IMPL_UID
    implementation_version_name: str = DEIDGATE_IMPL_VERSION


class Identity(_Strict):
    patient_id_prefix: str = "P"
    patient_id_chars: int = Field(default=20, ge=12, le=40)
    patient_name_prefix: str = "ANON"


class TextClean(_Strict):
    vocabulary: list[str] = Field(default_factory=list, description="words kept besides defaults")


class Marking(_Strict):
    """Attributes that declare the de-identification (PS3.15 E.1.1 requirements)."""

    enabled: bool = True
    method: str | None = None


PixelMode = Literal["off", "clean", "refuse-if-text"]


class PixelOptions(_Strict):
    """What the pixel stage (pixels.py) is told: the policy's ``pixels`` section less ``enabled``.

    mode: "off" (do not look), "clean" (find and blank), "refuse-if-text" (find and refuse).
    fill: the blanking value; None means display black (0, or the maximum for MONOCHROME1).
    margin: pixels of padding around each text box.
    background_margin: ink must exceed the background level by this fraction of the range.
    anatomy_fraction: components at least this fraction of the largest one are anatomy.
    min_ink_pixels: fewer ink pixels than this in a candidate is noise, not text.
    text_contrast: a candidate is text only if its brightest ink reaches this fraction of the
      image's bright level (99th percentile of block maxima) above the background; faint specks
      (ultrasound echoes, detector noise) stay as they are.
    """

    mode: PixelMode = "clean"
    fill: int | None = None
    margin: int = Field(default=4, ge=0)
    background_margin: float = Field(default=0.05, ge=0, le=1)
    anatomy_fraction: float = Field(default=0.2, ge=0, le=1)
    min_ink_pixels: int = Field(default=8, ge=0)
    text_contrast: float = Field(default=0.3, ge=0, le=1)


class PixelsSection(PixelOptions):
    """The ``pixels:`` section as written: the stage's options, and a switch for the stage."""

    enabled: bool = True

    def options(self) -> PixelOptions:
        return PixelOptions.model_validate(self.model_dump(exclude={"enabled"}))


class Layer(_Strict):
    """One YAML file as written: every field optional so it can be merged."""

    name: str
    version: str = "1"
    description: str = ""
    extends: list[str] = Field(default_factory=list)
    available_options: list[Option] = Field(default_factory=list)
    options: list[Option] = Field(default_factory=list)
    rules: list[Rule] = Field(default_factory=list)
    safe_private: list[SafePrivate] = Field(default_factory=list)
    sop_classes: SopClasses | None = None
    dates: Dates | None = None
    file_meta: FileMeta | None = None
    identity: Identity | None = None
    text: TextClean | None = None
    marking: Marking | None = None
    age_cap_years: int | None = Field(default=None, ge=0, le=200)
    pixels: PixelsSection | None = None

    @field_validator("extends", mode="before")
    @classmethod
    def _extends(cls, v: object) -> object:
        return [v] if isinstance(v, str) else v
