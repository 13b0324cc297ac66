"""YAML policies: strict models, layering with ``extends:``, and errors that name file, line, key.

A policy is a stack of layers (base profile, modality, project, manufacturer). Each YAML file is
validated on its own (so an error points at the file and line that caused it), then the layers are
merged: rules by selector (a keyword and the tag it names are the same selector), later layers win;
scalars and sections by "later layer set it"; options and the safe-private allow-list are unions.
The schema is documented in policies/README.md.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydicom.datadict import tag_for_keyword

from service.core.errors import PolicyError

POLICY_PACKAGE = "policies"
DEIDGATE_IMPL_UID = "2.25.99370533180154640466128434406493327489"
DEIDGATE_IMPL_VERSION = "DEIDGATE_010"


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

_TAG_RE = re.compile(r"^\(?\s*([0-9A-Fa-fXx]{4})\s*,?\s*([0-9A-Fa-fXx]{4})\s*\)?$")
_VRS = {
    "AE", "AS", "AT", "CS", "DA", "DS", "DT", "FL", "FD", "IS", "LO", "LT", "OB", "OD", "OF",
    "OL", "OV", "OW", "PN", "SH", "SL", "SQ", "SS", "ST", "SV", "TM", "UC", "UI", "UL", "UN",
    "UR", "US", "UT", "UV",
}  # fmt: skip


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)


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
        return bin(self.mask).count("1")

    def matches(self, tag: int) -> bool:
        return (tag & self.mask) == self.value


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
        if v is not None and v.upper() not in _VRS:
            raise ValueError(f"unknown VR {v!r}")
        return None if v is None else v.upper()

    @field_validator("element")
    @classmethod
    def _element(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            n = int(str(v), 16)
        except ValueError:
            raise ValueError(f"element offset {v!r} is not hex") from None
        if not 0 <= n <= 0xFF:
            raise ValueError("element offset must be 00-FF (the low byte inside the block)")
        return f"{n:02x}"

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
        n = int(str(v), 16)
        if not 0 <= n <= 0xFF:
            raise ValueError("element offset must be 00-FF")
        return f"{n:02x}"


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
    pixels: dict[str, Any] | None = None

    @field_validator("extends", mode="before")
    @classmethod
    def _extends(cls, v: object) -> object:
        return [v] if isinstance(v, str) else v


@dataclass
class Policy:
    """The merged, ready-to-apply policy."""

    name: str
    version: str
    description: str
    layers: list[str]
    options: frozenset[Option]
    rules: dict[str, Rule]
    safe_private: list[SafePrivate]
    sop_classes: SopClasses
    dates: Dates
    file_meta: FileMeta
    identity: Identity
    text: TextClean
    marking: Marking
    age_cap_years: int | None
    pixels: dict[str, Any] = field(default_factory=dict)

    @property
    def pixels_enabled(self) -> bool:
        return (
            Option.CLEAN_PIXEL_DATA in self.options
            and bool(self.pixels.get("enabled", True))
            and self.pixels.get("mode", "clean") != "off"
        )

    def pixel_options(self) -> Any:
        """The ``pixels`` section as pixels.PixelOptions (unknown keys are refused there)."""
        from workers.deid.pixels import PixelOptions

        kw = {k: v for k, v in self.pixels.items() if k != "enabled"}
        try:
            return PixelOptions.from_mapping(kw)
        except (TypeError, ValueError) as exc:
            raise PolicyError(f"policy {self.name}: pixels section: {exc}") from None

    @cached_property
    def matcher(self) -> Any:
        from workers.deid.rules import RuleSet

        return RuleSet(self)

    def __repr__(self) -> str:
        return f"Policy(name={self.name!r}, version={self.version!r}, layers={self.layers!r})"


# ---------------------------------------------------------------- YAML with line numbers


_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~10x faster


class _LineLoader(_BaseLoader):  # type: ignore[misc,valid-type]
    """SafeLoader whose mappings remember the line of each key (1-based)."""


class _LineDict(dict):  # type: ignore[type-arg]
    lines: dict[Any, int]
    line: int


class _LineList(list):  # type: ignore[type-arg]
    lines: list[int]
    line: int


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> _LineDict:
    loader.flatten_mapping(node)
    out = _LineDict()
    out.lines = {}
    out.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in out:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        out[key] = loader.construct_object(value_node, deep=True)
        out.lines[key] = key_node.start_mark.line + 1
    return out


def _construct_sequence(loader: _LineLoader, node: yaml.SequenceNode) -> _LineList:
    out = _LineList(loader.construct_object(n, deep=True) for n in node.value)
    out.lines = [n.start_mark.line + 1 for n in node.value]
    out.line = node.start_mark.line + 1
    return out


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def _line_of(raw: Any, loc: tuple[Any, ...]) -> tuple[int | None, str]:
    """Walk a pydantic error location through the raw YAML to the nearest known line."""
    line = getattr(raw, "line", None)
    node = raw
    keys: list[str] = []
    for part in loc:
        if isinstance(node, _LineDict) and part in node:
            line = node.lines.get(part, line)
            keys.append(str(part))
            node = node[part]
        elif isinstance(node, _LineList) and isinstance(part, int) and part < len(node):
            line = node.lines[part]
            keys.append(f"[{part}]")
            node = node[part]
        else:
            keys.append(str(part))
            if isinstance(node, (_LineDict, _LineList)):
                line = getattr(node, "line", line)
            node = None
    return line, ".".join(keys).replace(".[", "[")


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read policy file ({exc.strerror})") from None
    try:
        return yaml.load(text, Loader=_LineLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else "?"
        raise PolicyError(f"{path}:{line}: YAML error: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise PolicyError(f"{path}: YAML error: {exc}") from None


_LAYER_CACHE: dict[tuple[str, int, int], Layer] = {}


def parse_layer(path: Path) -> Layer:
    """Validate one YAML file (cached by path, size and mtime: layers are immutable models)."""
    st = path.stat()
    key = (str(path), st.st_mtime_ns, st.st_size)
    layer = _LAYER_CACHE.get(key)
    if layer is None:
        layer = _LAYER_CACHE[key] = _parse_layer(path)
    return layer


def _parse_layer(path: Path) -> Layer:
    """Validate one YAML file; the error names file, line and key of every problem."""
    raw = _read_yaml(path)
    if not isinstance(raw, dict):
        raise PolicyError(f"{path}:1: a policy must be a YAML mapping")
    try:
        return Layer.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            line, key = _line_of(raw, tuple(err["loc"]))
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            problems.append(f"{path}:{line}: key '{key}': {msg}")
        raise PolicyError("; ".join(problems)) from None


# ---------------------------------------------------------------- resolution and merging


def shipped_policies() -> dict[str, Path]:
    base = resources.files(POLICY_PACKAGE)
    return {
        Path(str(p)).stem: Path(str(p))
        for p in base.iterdir()
        if str(p).endswith((".yaml", ".yml"))
    }


def resolve_policy_path(name_or_path: str | Path, *, relative_to: Path | None = None) -> Path:
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")) or "/" in text or isinstance(name_or_path, Path):
        p = Path(text)
        if not p.is_absolute() and relative_to is not None and (relative_to / p).exists():
            p = relative_to / p
        if p.exists():
            return p
        stem = p.stem
        if stem in shipped_policies() and not p.exists() and "/" not in text:
            return shipped_policies()[stem]
        raise PolicyError(f"policy file {p} does not exist")
    shipped = shipped_policies()
    if text not in shipped:
        raise PolicyError(f"unknown policy {text!r}; shipped: {', '.join(sorted(shipped))}")
    return shipped[text]


def _layers(path: Path, seen: tuple[Path, ...] = ()) -> list[tuple[Path, Layer]]:
    path = path.resolve()
    if not path.is_file():
        raise PolicyError(f"policy file {path} does not exist")
    if path in seen:
        raise PolicyError(f"{path}: extends cycle through {' -> '.join(p.name for p in seen)}")
    layer = parse_layer(path)
    out: list[tuple[Path, Layer]] = []
    for parent in layer.extends:
        out.extend(_layers(resolve_policy_path(parent, relative_to=path.parent), (*seen, path)))
    out.append((path, layer))
    return out


def merge(layers: list[tuple[Path, Layer]]) -> Policy:
    if not layers:
        raise PolicyError("no policy layers")
    rules: dict[str, Rule] = {}
    options: set[Option] = set()
    safe: dict[tuple[str, str], SafePrivate] = {}
    scalars: dict[str, Any] = {}
    names: list[str] = []
    for path, layer in layers:
        names.append(layer.name)
        for rule in layer.rules:
            rules.pop(rule.selector_key, None)  # re-insert so the later layer's order shows
            rules[rule.selector_key] = rule
        options.update(layer.options)
        for sp in layer.safe_private:
            safe[(sp.creator.strip(), sp.element)] = sp
        for key in layer.model_fields_set:
            if key in {"sop_classes", "dates", "file_meta", "identity", "text", "marking",
                       "age_cap_years", "pixels", "description", "version"}:  # fmt: skip
                scalars[key] = getattr(layer, key)
        _ = path
    dates = {Option.RETAIN_LONGITUDINAL_FULL_DATES, Option.RETAIN_LONGITUDINAL_MODIFIED_DATES}
    if dates <= options:
        raise PolicyError(
            f"{layers[-1][0]}: options retain-longitudinal-full-dates and "
            "retain-longitudinal-modified-dates exclude each other"
        )
    top = layers[-1][1]
    return Policy(
        name=top.name,
        version=str(scalars.get("version", top.version)),
        description=scalars.get("description", ""),
        layers=names,
        options=frozenset(options),
        rules=rules,
        safe_private=list(safe.values()),
        sop_classes=scalars.get("sop_classes") or SopClasses(),
        dates=scalars.get("dates") or Dates(),
        file_meta=scalars.get("file_meta") or FileMeta(),
        identity=scalars.get("identity") or Identity(),
        text=scalars.get("text") or TextClean(),
        marking=scalars.get("marking") or Marking(),
        age_cap_years=scalars.get("age_cap_years"),
        pixels=dict(scalars.get("pixels") or {}),
    )


def load_policy(name_or_path: str | Path) -> Policy:
    """Load a shipped policy by stem (``mammography-screening``) or a YAML file by path."""
    path = resolve_policy_path(name_or_path)
    policy = merge(_layers(path))
    policy.matcher  # noqa: B018 - compile now so a bad rule fails at load, not mid-batch
    if policy.pixels_enabled:
        # the engine refuses instances (fail closed) if the pixel stage is missing
        with contextlib.suppress(ImportError):
            policy.pixel_options()
    return policy
