"""Consistent copies of the database for ``deidgate backup``, and their restoration.

- SQLite: the online backup API (``sqlite3.Connection.backup``) copies a consistent snapshot
  while the service keeps writing (WAL readers are not blocked); a file copy could catch a
  half-checkpointed database.
- PostgreSQL: ``pg_dump --format=custom`` (one consistent snapshot, the triggers and functions
  of the audit tables included) and ``pg_restore`` into an empty database. These are the
  client tools of the PostgreSQL packages (``postgresql-client``); when they are missing the
  backup refuses with a clear error and the operator uses the hospital's PostgreSQL backup
  (see docs/operations.md).

The password travels in ``PGPASSWORD`` for the child process only, never on its command line.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

from sqlalchemy.engine import URL, make_url

from service.core.errors import ConfigurationError


class BackupError(ConfigurationError):
    code = "backup"


def sqlite_path(url: str) -> Path:
    path = make_url(url).database
    if not path:
        raise BackupError("an in-memory SQLite database cannot be backed up")
    return Path(path)


def dump_sqlite(url: str, dest: Path) -> None:
    src = sqlite3.connect(f"file:{sqlite_path(url)}?mode=ro", uri=True)
    try:
        out = sqlite3.connect(dest)
        try:
            src.backup(out)
        finally:
            out.close()
    finally:
        src.close()


def restore_sqlite(src: Path, url: str) -> None:
    dest = sqlite_path(url)
    if dest.exists():
        raise BackupError(f"{dest} exists; restore into a new data folder")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    with sqlite3.connect(dest) as c:  # refuse a damaged copy now, not at first use
        if c.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
            raise BackupError("the database in the archive fails SQLite's integrity check")


def _pg(tool: str, url: URL) -> tuple[list[str], dict[str, str]]:
    exe = shutil.which(tool)
    if exe is None:
        raise BackupError(f"{tool} is not installed (Debian: postgresql-client); back up "
                          "PostgreSQL with the hospital's own tools (docs/operations.md)")
    args = [exe, "--no-password"]
    if url.host:
        args += ["--host", url.host]
    if url.port:
        args += ["--port", str(url.port)]
    if url.username:
        args += ["--username", url.username]
    env = {**os.environ}
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    return args, env


def _run(args: list[str], env: dict[str, str], what: str) -> None:
    r = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    if r.returncode != 0:  # the tools' messages name objects, never row values
        raise BackupError(f"{what} failed (exit {r.returncode}): {r.stderr.strip()[-400:]}")


def dump_postgresql(url: str, dest: Path) -> None:
    u = make_url(url)
    args, env = _pg("pg_dump", u)
    _run([*args, "--format=custom", "--no-owner", "--file", str(dest),
          "--dbname", str(u.database)], env, "pg_dump")


def restore_postgresql(src: Path, url: str) -> None:
    """Into an empty database (refused otherwise: restoring over data would merge two)."""
    from sqlalchemy import create_engine, inspect

    engine = create_engine(url)
    try:
        if inspect(engine).get_table_names():
            raise BackupError("the target PostgreSQL database is not empty; create a new one")
    finally:
        engine.dispose()
    u = make_url(url)
    args, env = _pg("pg_restore", u)
    _run([*args, "--no-owner", "--exit-on-error", "--single-transaction",
          "--dbname", str(u.database), str(src)], env, "pg_restore")


def dump(url: str, dest_dir: Path) -> str:
    """The database into ``dest_dir``; returns the file name written."""
    dialect = make_url(url).get_backend_name()
    if dialect == "sqlite":
        dump_sqlite(url, dest_dir / "deidgate.db")
        return "deidgate.db"
    if dialect == "postgresql":
        dump_postgresql(url, dest_dir / "deidgate.pgdump")
        return "deidgate.pgdump"
    raise BackupError(f"no backup for the {dialect} dialect")


def restore(src: Path, url: str) -> None:
    dialect = make_url(url).get_backend_name()
    kind = "sqlite" if src.name.endswith(".db") else "postgresql"
    if dialect != kind:
        raise BackupError(f"the archive holds a {kind} database; the target is {dialect}")
    (restore_sqlite if kind == "sqlite" else restore_postgresql)(src, url)
