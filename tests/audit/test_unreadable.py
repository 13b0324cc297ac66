"""An attacker who can write the database drops the append-only triggers (and loosens the
schema where needed) and stores junk or NULL in a column of one event. Every reader of the
audit log then names the row instead of crashing: ``verify`` (store, CLI, API) reports it as
edited, ``events`` (store, CLI, API) shows it flagged."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from service.api.app import create_app
from service.audit import AuditStore
from service.cli.main import app as cli_app
from service.core.config import Settings
from service.core.keys import SiteKeys
from service.core.security import Role, create_token
from service.db.session import session_scope
from tests.audit.util import store_unreadable, store_unreadable_head

HTTPS = "https://testserver"  # plain HTTP is refused outside development

ROOT = Path(__file__).resolve().parents[2]
N, BAD = 5, 3
COLUMNS = ("seq", "at", "kind", "actor", "details", "prev_hash", "hash")
JUNK = "'jünk☃'"  # not a number, not a time, not JSON, not hex; short enough for every column
BLOB = "X'FF00FE'"  # SQLite only: bytes that are not UTF-8 text at all
CASES = [(c, m) for c in COLUMNS for m in ("junk", "null")]


def _fill(url: str, keys: SiteKeys) -> None:
    with session_scope(url) as s:
        store = AuditStore(s, keys)
        for i in range(1, N + 1):
            store.log_event("test", actor="pytest", details={"i": i, "pseudonym": f"PSN-{i}"})


@pytest.fixture()
def filled(settings: Settings, migrated_db: str, site_keys: SiteKeys) -> str:
    _fill(migrated_db, site_keys)
    return migrated_db


@pytest.fixture()
def cli(home: Path, settings: Settings) -> Callable[..., Any]:
    runner = CliRunner()
    env = {"DEIDGATE_HOME": str(home), "DEIDGATE_DATABASE_URL": settings.db_url}

    def invoke(*args: str) -> Any:
        return runner.invoke(cli_app, list(args), env=env)

    return invoke


@pytest.fixture()
def api(settings: Settings, filled: str) -> Iterator[tuple[TestClient, dict[str, str]]]:
    with session_scope(filled) as s:
        token = create_token(s, role=Role.auditor, name="unreadable-auditor").token
    with TestClient(create_app(settings), base_url=HTTPS, raise_server_exceptions=False) as c:
        yield c, {"Authorization": f"Bearer {token}"}


def _value(mode: str) -> str | None:
    return None if mode == "null" else JUNK


def _flags(column: str, mode: str) -> bool:
    """Whether the events view flags the row: hashes are not shown, and junk text in a text
    column (kind, actor) is still text; verify catches those by the hash."""
    return column not in ("prev_hash", "hash") and (mode == "null" or column in ("seq", "at",
                                                                                 "details"))


def _assert_named(report: Any) -> None:
    assert not report.ok
    assert BAD in report.edited, report.lines()
    assert report.first_bad_seq == BAD, report.lines()
    # nothing else is blamed: the neighbours' links are explained by the edited row
    assert {f.seq for f in report.findings} == {BAD}, report.lines()


@pytest.mark.parametrize(("column", "mode"), CASES)
def test_verify_names_the_unreadable_row(filled: str, site_keys: SiteKeys, column: str,
                                         mode: str) -> None:
    store_unreadable(filled, BAD, column, _value(mode))
    with session_scope(filled) as s:
        report = AuditStore(s, site_keys).verify_chain()
    _assert_named(report)
    assert report.events == N


@pytest.mark.parametrize("column", COLUMNS)
def test_verify_names_a_row_holding_bytes_that_are_not_text(
        tmp_path: Path, site_keys: SiteKeys, column: str) -> None:
    """SQLite only: its columns can hold bytes that are not UTF-8 (PostgreSQL's text cannot),
    which Python's sqlite3 refuses to decode as text."""
    from service.db.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'blob.db'}"
    upgrade(url)
    _fill(url, site_keys)
    store_unreadable(url, BAD, column, BLOB)
    with session_scope(url) as s:
        _assert_named(AuditStore(s, site_keys).verify_chain())


@pytest.mark.parametrize(("column", "mode"), CASES)
def test_cli_verify_and_events_exit_cleanly(filled: str, cli: Callable[..., Any], column: str,
                                            mode: str) -> None:
    store_unreadable(filled, BAD, column, _value(mode))
    res = cli("audit", "verify")
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit), res.output
    assert f"seq {BAD}: edited" in res.output and "Traceback" not in res.output
    assert f"first bad seq {BAD}" in res.output
    res = cli("audit", "events")
    assert res.exit_code == 0 and res.exception is None, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == N
    flagged = [ln for ln in lines if "UNREADABLE" in ln]
    assert len(flagged) == _flags(column, mode), res.output
    res = cli("audit", "events", "--json")
    assert res.exit_code == 0 and res.exception is None, res.output


@pytest.mark.parametrize(("column", "mode"), CASES)
def test_api_chain_and_events_answer_200(api: tuple[TestClient, dict[str, str]], filled: str,
                                         column: str, mode: str) -> None:
    client, auth = api
    store_unreadable(filled, BAD, column, _value(mode))
    r = client.get("/api/v1/audit/chain", headers=auth)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ok"] is False and body["first_bad_seq"] == BAD
    assert (BAD, "edited") in {(f["seq"], f["problem"]) for f in body["findings"]}
    r = client.get("/api/v1/audit/events", headers=auth)
    assert r.status_code == 200, r.text
    events = r.json()
    assert len(events) == N
    flagged = [e for e in events if e["unreadable"]]
    if not _flags(column, mode):
        assert flagged == []
    else:
        assert len(flagged) == 1 and flagged[0]["unreadable"] == [column]
        if column != "seq":
            assert flagged[0]["seq"] == BAD


def test_edited_json_details_is_flagged_not_a_crash(filled: str, site_keys: SiteKeys,
                                                    cli: Callable[..., Any]) -> None:
    store_unreadable(filled, BAD, "details", "'{\"i\": 3, \"pseudonym\": '")
    with session_scope(filled) as s:
        views = AuditStore(s, site_keys).events()
    [bad] = [v for v in views if v.unreadable]
    assert bad.seq == BAD and bad.details is None and bad.unreadable == ("details",)
    assert next(v.details for v in views if not v.unreadable) == {"i": 1, "pseudonym": "PSN-1"}
    res = cli("audit", "events")
    assert res.exit_code == 0 and "UNREADABLE(details)" in res.output, res.output


@pytest.mark.parametrize(("column", "mode"), [("seq", "junk"), ("seq", "null"),
                                              ("hash", "null")])
def test_unreadable_chain_head_is_a_finding(filled: str, site_keys: SiteKeys,
                                            cli: Callable[..., Any], column: str,
                                            mode: str) -> None:
    store_unreadable_head(filled, column, _value(mode))
    with session_scope(filled) as s:
        report = AuditStore(s, site_keys).verify_chain()
    assert [f.problem for f in report.findings] == ["head"], report.lines()
    assert "unreadable" in report.findings[0].detail
    res = cli("audit", "verify")
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit), res.output


def test_real_process_prints_no_traceback(filled: str, home: Path, settings: Settings) -> None:
    """The case measured in the issue, as an operator runs it: junk in an event's time."""
    store_unreadable(filled, BAD, "at", JUNK)
    env = {**os.environ, "DEIDGATE_HOME": str(home), "DEIDGATE_DATABASE_URL": settings.db_url}
    proc = subprocess.run([sys.executable, "-m", "service.cli.main", "audit", "verify"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert f"seq {BAD}: edited" in proc.stdout
