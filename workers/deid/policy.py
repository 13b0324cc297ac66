"""A policy: layering YAML files with ``extends:`` into one ready-to-apply ``Policy``.

A policy is a stack of layers (base profile, modality, project, manufacturer). Each YAML file is
validated on its own against the schema (policy_schema.py), so an error points at the file and
line that caused it (yaml_lines.py); then the layers are merged: rules by selector (a keyword and
the tag it names are the same selector), later layers win; scalars and sections by "later layer
set it"; options and the safe-private allow-list are unions.
The schema is documented in policies/README.md.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from service.core.errors import PolicyError
from workers.deid.policy_schema import (
    Dates,
    FileMeta,
    Identity,
    Layer,
    Marking,
    PixelOptions,
    PixelsSection,
    Rule,
    SafePrivate,
    SopClasses,
    TextClean,
)
from workers.deid.rules import RuleSet
from workers.deid.vocabulary import Option
from workers.deid.yaml_lines import describe_errors, read_yaml

POLICY_PACKAGE = "policies"


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
    pixels: PixelsSection = field(default_factory=PixelsSection)

    @property
    def pixels_enabled(self) -> bool:
        return (Option.CLEAN_PIXEL_DATA in self.options and self.pixels.enabled
                and self.pixels.mode != "off")

    def pixel_options(self) -> PixelOptions:
        """What the pixel stage is told (validated with the rest of the policy at load)."""
        return self.pixels.options()

    @cached_property
    def matcher(self) -> RuleSet:
        return RuleSet(self.rules.values(), self.options, self.safe_private)

    def __repr__(self) -> str:
        return f"Policy(name={self.name!r}, version={self.version!r}, layers={self.layers!r})"


_LAYER_CACHE: dict[tuple[str, str], Layer] = {}


def parse_layer(path: Path) -> Layer:
    """Validate one YAML file, cached by path and content hash (layers are immutable models).

    By content, not size and mtime: an edit that keeps both (a copy with ``cp -p``, a
    restored backup, two edits within the clock's resolution) must not leave a stale layer."""
    data = path.read_bytes()
    key = (str(path), hashlib.sha256(data).hexdigest())
    layer = _LAYER_CACHE.get(key)
    if layer is None:
        layer = _LAYER_CACHE[key] = _parse_layer(path)
    return layer


def _parse_layer(path: Path) -> Layer:
    """Validate one YAML file; the error names file, line and key of every problem."""
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise PolicyError(f"{path}:1: a policy must be a YAML mapping")
    try:
        return Layer.model_validate(raw)
    except ValidationError as exc:
        raise PolicyError(describe_errors(path, raw, exc)) from None


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


# Sections and scalars a later layer replaces whole when it sets them.
_REPLACED = ("sop_classes", "dates", "file_meta", "identity", "text", "marking",
             "age_cap_years", "pixels", "description", "version")


def merge(layers: list[tuple[Path, Layer]]) -> Policy:
    if not layers:
        raise PolicyError("no policy layers")
    rules: dict[str, Rule] = {}
    options: set[Option] = set()
    safe: dict[tuple[str, str], SafePrivate] = {}
    scalars: dict[str, Any] = {}
    names: list[str] = []
    for _path, layer in layers:
        names.append(layer.name)
        for rule in layer.rules:
            rules.pop(rule.selector_key, None)  # re-insert so the later layer's order shows
            rules[rule.selector_key] = rule
        options.update(layer.options)
        for sp in layer.safe_private:
            safe[(sp.creator.strip(), sp.element)] = sp
        for key in layer.model_fields_set & set(_REPLACED):
            scalars[key] = getattr(layer, key)
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
        pixels=scalars.get("pixels") or PixelsSection(),
    )


def policy_fingerprint(name_or_path: str | Path) -> str:
    """SHA-256 over the content of every layer file of a policy, in ``extends`` order.

    Workers keep a loaded engine per policy; they key it by this, so an edited policy file
    (or an edited layer it extends) is picked up by the next task, and the policy the API
    checked at submission is the one the workers apply."""
    h = hashlib.sha256()
    for path, _layer in _layers(resolve_policy_path(name_or_path)):
        h.update(str(path).encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def policy_files(name_or_path: str | Path) -> list[Path]:
    """The YAML files a policy is made of (its layers, in order); for the submission-time
    stamp (``service.jobs.policy_check``) that says when a policy must be validated again."""
    return [p for p, _ in _layers(resolve_policy_path(name_or_path))]


def load_policy(name_or_path: str | Path) -> Policy:
    """Load a shipped policy by stem (``mammography-screening``) or a YAML file by path."""
    path = resolve_policy_path(name_or_path)
    policy = merge(_layers(path))
    policy.matcher  # noqa: B018 - compile now so a bad rule fails at load, not mid-batch
    return policy
