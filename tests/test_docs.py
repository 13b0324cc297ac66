"""The documents name only commands, options and settings that exist.

Every ``deidgate ...`` command line in docs/*.md (in code spans and blocks) must resolve to a
command of the real console app, with each ``--option`` it names accepted by that command, and
every ``DEIDGATE_*`` name must be a setting (or a docker-compose variable the compose file
declares)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer

from service.cli.main import app
from service.core.config import Settings

DOCS = Path(__file__).resolve().parents[1] / "docs"
COMPOSE = Path(__file__).resolve().parents[1] / "docker-compose.yml"
_CODE = re.compile(r"```.*?```|`[^`\n]+`", re.DOTALL)
_CMD = re.compile(r"(?<![\w/.-])deidgate((?:[ \t]+[^\s`|;&]+)+)")
_WORD = re.compile(r"[a-z][a-z-]*")  # a sub-command; a path or a user name is not one
_SETTING = re.compile(r"\bDEIDGATE_[A-Z0-9_]+\b")


def _command_lines(text: str) -> list[list[str]]:
    lines = []
    for block in _CODE.findall(text):
        for m in _CMD.finditer(block.replace("\\\n", " ")):
            words = m.group(1).split()
            if _WORD.fullmatch(words[0]):
                lines.append(words)
    return lines


# typer vendors its own click (typer._click): commands are duck-typed, groups have get_command
Command = Any


def _is_group(cmd: Command) -> bool:
    return hasattr(cmd, "get_command")


def _resolve(root: Command, words: list[str]) -> tuple[Command, list[str]]:
    cmd = root
    rest = list(words)
    while _is_group(cmd) and rest and not rest[0].startswith("-"):
        sub = cmd.get_command(cmd.context_class(cmd), rest[0])
        if sub is None:
            if cmd is root:
                raise AssertionError(f"no command deidgate {' '.join(words)}")
            break  # an argument of the group's default: not ours
        cmd, rest = sub, rest[1:]
    return cmd, rest


def _options(cmd: Command) -> set[str]:
    return {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}


@pytest.mark.parametrize("doc", sorted(DOCS.glob("*.md")), ids=lambda p: p.name)
def test_commands_and_options_exist(doc: Path) -> None:
    root = typer.main.get_command(app)
    assert _is_group(root)
    for words in _command_lines(doc.read_text(encoding="utf-8")):
        cmd, rest = _resolve(root, words)
        assert not _is_group(cmd) or not rest, (doc.name, words)
        for w in rest:
            opt = w.split("=", 1)[0]
            if opt.startswith("--"):
                assert opt in _options(cmd), f"{doc.name}: deidgate {' '.join(words)}: {opt}"


def test_settings_named_in_docs_exist() -> None:
    fields = {f"DEIDGATE_{name.upper()}" for name in Settings.model_fields}
    compose = set(_SETTING.findall(COMPOSE.read_text(encoding="utf-8")))
    for doc in sorted(DOCS.glob("*.md")):
        for name in set(_SETTING.findall(doc.read_text(encoding="utf-8"))):
            assert name in fields or name in compose, f"{doc.name}: {name} is no setting"


def test_the_check_finds_a_missing_command() -> None:
    root = typer.main.get_command(app)
    with pytest.raises(AssertionError, match="no command"):
        _resolve(root, ["keys-frobnicate"])
    cmd, rest = _resolve(root, ["keys", "rotate", "--no-activate"])
    assert cmd.name == "rotate" and "--no-activate" in _options(cmd) and rest == ["--no-activate"]
    assert "--frobnicate" not in _options(cmd)
