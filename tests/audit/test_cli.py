"""``deidgate audit ...`` end to end through the real console app, DEIDGATE_HOME set."""

# Tampering is raw SQL by design; the values are test constants.
# ruff: noqa: S608

from __future__ import annotations

import csv
import json
import stat
from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from service.audit import AuditStore
from service.cli.main import app
from service.core.keys import SiteKeys
from service.db.session import session_scope
from tests.audit.util import originals, outcome, pseudonyms, tamper


@pytest.fixture()
def cli(home: Path, db_url: str):  # type: ignore[no-untyped-def]
    runner = CliRunner()
    env = {"DEIDGATE_HOME": str(home), "DEIDGATE_DATABASE_URL": db_url}

    def invoke(*args: str):  # type: ignore[no-untyped-def]
        return runner.invoke(app, list(args), env=env)

    return invoke


@pytest.fixture()
def recorded(cli, db_url: str, site_keys: SiteKeys) -> str:  # type: ignore[no-untyped-def]
    """Two instances recorded with the key the CLI will load from DEIDGATE_HOME."""
    res = cli("db", "upgrade")
    assert res.exit_code == 0, res.output
    for n in (1, 2):
        with session_scope(db_url) as s:
            AuditStore(s, site_keys).record_outcome(outcome(n), source="cli", job_id=None)
    return db_url


def test_db_upgrade_from_empty_and_current(cli, db_url: str) -> None:  # type: ignore[no-untyped-def]
    res = cli("db", "current")
    assert res.exit_code == 1 and "(empty)" in res.output
    res = cli("db", "upgrade")
    assert res.exit_code == 0, res.output
    assert "0011_mapping_key_id" in res.output
    res = cli("db", "current")
    assert res.exit_code == 0 and "up to date" in res.output
    assert cli("db", "upgrade").exit_code == 0  # idempotent


def test_export_mapping_csv(cli, recorded: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "exports" / "patients.csv"
    res = cli("audit", "export-mapping", "--kind", "patient", "--out", str(out),
              "--operator", "midi-b")
    assert res.exit_code == 0, res.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    with out.open(newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows == [["id_old", "id_new"],
                    [originals(1)["patient"], pseudonyms(1)["patient"]],
                    [originals(2)["patient"], pseudonyms(2)["patient"]]]
    assert originals(1)["patient"] not in res.output
    res = cli("audit", "events", "--kind", "export-mapping", "--json")
    event = json.loads(res.output.strip())
    assert event["actor"] == "midi-b" and event["details"] == {"kind": "patient", "rows": 2}
    assert cli("audit", "export-mapping", "--kind", "name", "--out", str(out)).exit_code != 0


def test_lookup_prints_identity_and_logs_operator(cli, recorded: str) -> None:  # type: ignore[no-untyped-def]
    res = cli("audit", "lookup", "PSN-0002", "--reason", "clinical follow-up",
              "--operator", "alice")
    assert res.exit_code == 0, res.output
    assert f"patient\t{originals(2)['patient']}" in res.output
    res = cli("audit", "events", "--kind", "reidentify")
    assert res.exit_code == 0
    assert "alice" in res.output and "clinical follow-up" in res.output
    assert "PSN-0002" in res.output and originals(2)["patient"] not in res.output
    # the OS user is the default operator
    res = cli("audit", "lookup", "2.25.1001", "--reason", "qa")
    assert res.exit_code == 0 and originals(1)["study"] in res.output
    assert cli("audit", "lookup", "PSN-0001").exit_code != 0  # --reason is required
    res = cli("audit", "lookup", "PSN-0001", "--reason", "  ")
    assert res.exit_code == 1 and "lookup-refused" in res.output
    assert originals(1)["patient"] not in res.output
    res = cli("audit", "lookup", "PSN-9999", "--reason", "typo?")
    assert res.exit_code == 1
    lines = cli("audit", "events", "--kind", "reidentify").output.strip().splitlines()
    assert len(lines) == 3


def test_mappings_command_shows_no_originals(cli, recorded: str) -> None:  # type: ignore[no-untyped-def]
    res = cli("audit", "mappings", "--patient", "PSN-0001")
    assert res.exit_code == 0, res.output
    assert len(res.output.strip().splitlines()) == 5
    for value in originals(1).values():
        assert value not in res.output
    assert cli("audit", "mappings", "PSN-7777").exit_code == 1


def test_verify_exit_codes(cli, recorded: str) -> None:  # type: ignore[no-untyped-def]
    res = cli("audit", "verify")
    assert res.exit_code == 0 and "intact: 2 events" in res.output
    cli("audit", "lookup", "PSN-0001", "--reason", "r", "--operator", "bob")
    tamper(recorded, "UPDATE audit_events SET actor = 'mallory' WHERE seq = 3",
           "DELETE FROM audit_events WHERE seq = 1")
    res = cli("audit", "verify")
    assert res.exit_code == 1
    assert "seq 1: deleted" in res.output and "seq 3: edited" in res.output
    assert "first bad seq 1" in res.output


def test_verify_anchor_catches_a_consistent_truncation(cli, recorded: str) -> None:  # type: ignore[no-untyped-def]
    res = cli("audit", "verify")
    anchor = next(ln for ln in res.output.splitlines() if ln.startswith("anchor: "))[8:]
    assert anchor.startswith("2:")
    with session_scope(recorded) as s:
        first = s.execute(text("SELECT hash FROM audit_events WHERE seq = 1")).scalar_one()
    # drop the newest event and rewind the head: consistent in itself
    tamper(recorded, "DELETE FROM audit_events WHERE seq = 2",
           f"UPDATE audit_chain_head SET seq = 1, hash = '{first}'")
    assert cli("audit", "verify").exit_code == 0
    res = cli("audit", "verify", "--anchor", anchor)
    assert res.exit_code == 1 and "seq 2: anchor" in res.output
    assert cli("audit", "verify", "--anchor", "nonsense").exit_code != 0
