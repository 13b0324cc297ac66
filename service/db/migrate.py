"""Run Alembic migrations programmatically (``deidgate db upgrade``; automatic on first use).

Alembic is imported when a migration or its scripts are needed, not with this module: every
``deidgate`` command checks the schema (``ensure_schema``), and importing Alembic (with all of
its SQL dialects) was ~0.4 s of a command's start-up on a quiet machine and several seconds on a
busy one. With a ``cache_dir`` the heads the migration scripts define are kept in
``schema-heads.json`` there while the scripts are unchanged (names, sizes, modification
times), so a current database costs one ``SELECT`` of ``alembic_version`` and no Alembic.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from service.db.session import get_engine

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
HEADS_CACHE = "schema-heads.json"


def alembic_config(url: str) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def current_heads(url: str) -> set[str]:
    from alembic.runtime.migration import MigrationContext

    with get_engine(url).connect() as conn:
        return set(MigrationContext.configure(conn).get_current_heads())


def script_heads(url: str) -> set[str]:
    """The heads a fully upgraded database records. Each area (audit, dicom, jobs) is its own
    Alembic branch off ``0001_base``; a branch head that another branch's revision depends on
    (``depends_on``) is not recorded on its own, Alembic folds it into the dependent head."""
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(alembic_config(url))
    heads = set(scripts.get_heads())
    below = {r.revision for h in heads for r in scripts.iterate_revisions(h, "base")
             if r.revision != h}
    return heads - below


def upgrade(url: str, revision: str = "heads", *, default_node: str | None = None) -> None:
    """``default_node``: this host's node name, given to rows that predate a ``node`` column
    (``0012_received_node``); the host name when not given."""
    from alembic import command

    cfg = alembic_config(url)
    with get_engine(url).begin() as conn:
        cfg.attributes["connection"] = conn
        cfg.attributes["default_node"] = default_node
        command.upgrade(cfg, revision)


def _scripts_signature() -> list[list[object]]:
    out: list[list[object]] = []
    for p in sorted([MIGRATIONS / "env.py", *(MIGRATIONS / "versions").glob("*.py")]):
        st = p.stat()
        out.append([p.name, st.st_size, st.st_mtime_ns])
    return out


def _cached_heads(cache_dir: Path) -> set[str] | None:
    try:
        data = json.loads((cache_dir / HEADS_CACHE).read_text())
        if data["scripts"] == _scripts_signature():
            return {str(h) for h in data["heads"]}
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _remember_heads(cache_dir: Path, heads: set[str]) -> None:
    with contextlib.suppress(OSError):  # a cache: never a reason for a command to fail
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cache_dir / f".{HEADS_CACHE}.{os.getpid()}"
        tmp.write_text(json.dumps({"scripts": _scripts_signature(), "heads": sorted(heads)}))
        os.replace(tmp, cache_dir / HEADS_CACHE)


def recorded_heads(url: str) -> set[str] | None:
    """The revisions the database records (Alembic's version table), read without Alembic;
    None when there is no version table yet."""
    try:
        with get_engine(url).connect() as conn:
            return {str(r) for r in conn.execute(text("SELECT version_num FROM alembic_version"))
                    .scalars()}
    except SQLAlchemyError:
        return None


def ensure_schema(url: str, cache_dir: Path | None = None, *,
                  default_node: str | None = None) -> None:
    """Upgrade to head when behind; a no-op (one query) when current. ``cache_dir``: where the
    scripts' heads are remembered (see the module docstring); ``default_node``: see ``upgrade``."""
    if cache_dir is not None:
        heads = _cached_heads(cache_dir)
        if heads is not None and recorded_heads(url) == heads:
            return
    heads = script_heads(url)
    if current_heads(url) != heads:
        upgrade(url, default_node=default_node)
    if cache_dir is not None:
        _remember_heads(cache_dir, heads)
