"""``audit export-mapping`` makes its CSV durable: the file's bytes before its rename, and the
folder after it (a rename lives in the folder; without that fsync a power cut can bring back
the old name or none)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from service.audit import AuditStore
from service.cli.main import app
from service.core.keys import SiteKeys
from service.db.session import session_scope
from tests.audit.util import outcome
from tests.core.fsync_spy import install


def test_export_folder_is_fsynced_after_the_rename(
        home: Path, db_url: str, site_keys: SiteKeys, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    env = {"DEIDGATE_HOME": str(home), "DEIDGATE_DATABASE_URL": db_url}
    assert runner.invoke(app, ["db", "upgrade"], env=env).exit_code == 0
    with session_scope(db_url) as s:
        AuditStore(s, site_keys).record_outcome(outcome(1), source="t", job_id=None)
    out = tmp_path / "exports" / "patients.csv"
    spy = install(monkeypatch)
    res = runner.invoke(app, ["audit", "export-mapping", "--kind", "patient", "--out", str(out),
                              "--operator", "t"], env=env)
    assert res.exit_code == 0, res.output
    tmp = out.with_name(f".{out.name}.tmp")
    renamed = spy.index("rename", out)
    assert 0 <= spy.index("fsync", tmp) < renamed, spy.events
    assert spy.index("fsync", out.parent) > renamed, spy.events
    assert sorted(os.listdir(out.parent)) == ["patients.csv"]
