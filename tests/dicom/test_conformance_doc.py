"""docs/conformance.md stays true: its generated tables are what the code gives now, and the
codes, statuses, settings and commands its prose names exist in the code."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest
from typer.testing import CliRunner

from service.cli.main import app
from service.core.config import Settings
from service.dicom import pull, store_handler
from service.dicom.tls import TlsRefusal

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "conformance.md"


@pytest.fixture(scope="module")
def gen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_conformance",
                                                  ROOT / "scripts" / "gen_conformance.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def text() -> str:
    return DOC.read_text(encoding="utf-8")


def test_generated_tables_are_current(gen: ModuleType, text: str) -> None:
    blocks = gen.blocks_in(text)
    assert set(blocks) == set(gen.BLOCKS)
    for name, body in blocks.items():
        assert body == gen.BLOCKS[name](), (
            f"docs/conformance.md block {name!r} is out of date: run scripts/gen_conformance.py")
    assert gen.render(text) == text


def test_the_generator_notices_a_stale_table(gen: ModuleType, text: str) -> None:
    stale = text.replace("| `113101` | Clean Pixel Data Option", "| `113199` | Clean Pixel Data")
    assert stale != text
    assert gen.render(stale) == text


def test_every_refusal_code_is_described(text: str) -> None:
    for refusal in TlsRefusal:
        assert f"`{refusal.value}`" in text


def _source() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for folder in ("service", "workers")
                     for p in (ROOT / folder).rglob("*.py"))


def test_error_codes_named_in_the_prose_exist(text: str) -> None:
    source = _source()
    codes = set(re.findall(r"`((?:pacs|move|tls|calling|unsupported)-[a-z-]+|incomplete)`",
                           text))
    assert {"pacs-refused", "move-destination-refused", "tls-not-configured",
            "calling-ae-not-allowed", "unsupported-sop-class"} <= codes
    refusals = {r.value for r in TlsRefusal}
    missing = [c for c in codes if c not in refusals and f'"{c}"' not in source]
    assert missing == []


def test_settings_named_exist(text: str) -> None:
    named = set(re.findall(r"DEIDGATE_([A-Z0-9_]+)", text))
    assert "DICOM_TLS_CA" in named and "DICOM_PLAIN" in named
    fields = set(Settings.model_fields)
    assert sorted(n for n in named if n.lower() not in fields) == []


def test_statuses_named_are_the_handlers(text: str) -> None:
    paragraph = text[text.index("**C-STORE as SCP: statuses returned.**"):]
    paragraph = paragraph[:paragraph.index("\n\n")]
    source = (ROOT / "service" / "dicom" / "store_handler.py").read_text(encoding="utf-8")
    names = set(re.findall(r"return ([A-Z][A-Z_]+)\b", source))
    returned = {getattr(store_handler, n) for n in names}
    assert store_handler.SUCCESS in returned and store_handler.OUT_OF_RESOURCES in returned
    named = {int(v, 16) for v in re.findall(r"`([0-9A-F]{4})`", paragraph)}
    assert named == returned  # every status the handler returns, and no other
    assert f"status {pull.MOVE_DESTINATION_UNKNOWN:04X}" in text


def test_commands_named_exist(text: str) -> None:
    commands = {tuple(m.split()) for m in re.findall(r"`deidgate ([a-z]+(?: [a-z]+)?)", text)}
    assert {("ae", "tls"), ("pacs", "tls"), ("ae", "allow"), ("job",)} <= commands
    for command in commands:
        res = CliRunner().invoke(app, [*command, "--help"])
        assert res.exit_code == 0, (command, res.output)
