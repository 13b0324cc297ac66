"""``deidgate backup create|restore`` on SQLite and PostgreSQL: restored into a new data folder
(and a new database), the audit chain verifies and lookups open, across a key rotation."""

from __future__ import annotations

import stat
import tarfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from service.audit import AuditStore
from service.cli.main import app
from service.core.config import Settings
from service.core.keys import SiteKeys
from service.db.session import session_scope
from tests.audit.util import originals, outcome, pseudonyms
from tests.conftest import PG_ADMIN_URL


@pytest.fixture()
def new_pg() -> Iterator[str]:
    """A second, empty PostgreSQL database to restore into."""
    name = f"deidgate_r_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        from service.db.session import get_engine, get_sessionmaker

        get_engine.cache_clear()
        get_sessionmaker.cache_clear()
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _cli(env: dict[str, str]) -> Callable[..., Any]:
    runner = CliRunner()
    return lambda *args: runner.invoke(app, list(args), env=env)


def test_backup_restores_into_a_new_folder(home: Path, db_url: str, tmp_path: Path,
                                           site_keys: SiteKeys,
                                           request: pytest.FixtureRequest) -> None:
    cli = _cli({"DEIDGATE_HOME": str(home), "DEIDGATE_DATABASE_URL": db_url})
    assert cli("db", "upgrade").exit_code == 0
    keys = site_keys
    with session_scope(db_url) as s:
        AuditStore(s, keys).record_outcome(outcome(1), source="cli", job_id=None)
    res = cli("keys", "rotate")  # one row under "site", one under the rotated key
    assert res.exit_code == 0, res.output
    keys = SiteKeys.for_settings(Settings(home=home, database_url=db_url))
    with session_scope(db_url) as s:
        AuditStore(s, keys).record_outcome(outcome(2), source="cli", job_id=None)

    archive = tmp_path / "backups" / "b.tar.gz"
    res = cli("backup", "create", str(archive))
    assert res.exit_code == 0, res.output
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    assert {"manifest.json", "keys/site.key", "db/deidgate.db" if db_url.startswith("sqlite")
            else "db/deidgate.pgdump"} <= names
    assert any(n.startswith("keys/seal-") for n in names)
    assert cli("backup", "create", str(archive)).exit_code != 0  # never overwritten

    target = tmp_path / "restored"
    args = ["backup", "restore", str(archive), "--home", str(target)]
    new_url = f"sqlite:///{target / 'deidgate.db'}"
    if db_url.startswith("postgresql"):
        new_url = request.getfixturevalue("new_pg")
        args += ["--database-url", new_url]
    res = cli(*args)
    assert res.exit_code == 0, res.output
    assert "audit verify" in res.output
    assert cli(*args).exit_code != 0  # the folder is no longer new

    restored = _cli({"DEIDGATE_HOME": str(target), "DEIDGATE_DATABASE_URL": new_url})
    res = restored("audit", "verify")
    assert res.exit_code == 0 and "audit log intact" in res.output, res.output
    for n in (1, 2):
        res = restored("audit", "lookup", pseudonyms(n)["patient"], "--reason", "restore-test",
                       "--operator", "ops")
        assert res.exit_code == 0, res.output
        assert originals(n)["patient"] in res.output
    res = restored("keys", "list")
    assert "MISSING" not in res.output and res.exit_code == 0


def test_restore_refuses_a_foreign_archive(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tar.gz"
    with tarfile.open(bad, "w:gz") as tar:
        (tmp_path / "x").write_text("x")
        tar.add(tmp_path / "x", arcname="../x")
    res = _cli({"DEIDGATE_HOME": str(tmp_path / "h")})(
        "backup", "restore", str(bad), "--home", str(tmp_path / "new"))
    assert res.exit_code != 0 and "unexpected entry" in res.output
