"""YAML that remembers where each key stood, so a validation error can name file, line and key.

pydantic reports an error location as a path of keys and indexes (``rules[3].action``); this
loader keeps the 1-based line of every mapping key and sequence item, and ``line_of`` walks such
a path through the loaded document to the nearest line it knows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from service.core.errors import PolicyError

_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~10x faster


class _LineLoader(_BaseLoader):  # type: ignore[misc,valid-type]
    """SafeLoader whose mappings remember the line of each key (1-based)."""


class LineDict(dict):  # type: ignore[type-arg]
    lines: dict[Any, int]
    line: int


class LineList(list):  # type: ignore[type-arg]
    lines: list[int]
    line: int


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> LineDict:
    loader.flatten_mapping(node)
    out = LineDict()
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


def _construct_sequence(loader: _LineLoader, node: yaml.SequenceNode) -> LineList:
    out = LineList(loader.construct_object(n, deep=True) for n in node.value)
    out.lines = [n.start_mark.line + 1 for n in node.value]
    out.line = node.start_mark.line + 1
    return out


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def line_of(raw: Any, loc: tuple[Any, ...]) -> tuple[int | None, str]:
    """Walk a pydantic error location through the raw YAML to the nearest known line."""
    line = getattr(raw, "line", None)
    node = raw
    keys: list[str] = []
    for part in loc:
        if isinstance(node, LineDict) and part in node:
            line = node.lines.get(part, line)
            keys.append(str(part))
            node = node[part]
        elif isinstance(node, LineList) and isinstance(part, int) and part < len(node):
            line = node.lines[part]
            keys.append(f"[{part}]")
            node = node[part]
        else:
            keys.append(str(part))
            if isinstance(node, (LineDict, LineList)):
                line = getattr(node, "line", line)
            node = None
    return line, ".".join(keys).replace(".[", "[")


def read_yaml(path: Path) -> Any:
    """The document with line numbers; an unreadable file or bad YAML names file and line."""
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


def describe_errors(path: Path, raw: Any, exc: ValidationError) -> str:
    """Every problem of ``exc`` as ``file:line: key 'a.b[2].c': message``, joined by "; "."""
    problems = []
    for err in exc.errors():
        line, key = line_of(raw, tuple(err["loc"]))
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        problems.append(f"{path}:{line}: key '{key}': {msg}")
    return "; ".join(problems)
