"""Run Alembic migrations programmatically (``deidgate db upgrade``; automatic on first use)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from service.db.session import get_engine

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def current_heads(url: str) -> set[str]:
    with get_engine(url).connect() as conn:
        return set(MigrationContext.configure(conn).get_current_heads())


def script_heads(url: str) -> set[str]:
    """The heads a fully upgraded database records. Each area (audit, dicom, jobs) is its own
    Alembic branch off ``0001_base``; a branch head that another branch's revision depends on
    (``depends_on``) is not recorded on its own, Alembic folds it into the dependent head."""
    scripts = ScriptDirectory.from_config(alembic_config(url))
    heads = set(scripts.get_heads())
    below = {r.revision for h in heads for r in scripts.iterate_revisions(h, "base")
             if r.revision != h}
    return heads - below


def upgrade(url: str, revision: str = "heads", *, default_node: str | None = None) -> None:
    """``default_node``: this host's node name, given to rows that predate a ``node`` column
    (``0012_received_node``); the host name when not given."""
    cfg = alembic_config(url)
    with get_engine(url).begin() as conn:
        cfg.attributes["connection"] = conn
        cfg.attributes["default_node"] = default_node
        command.upgrade(cfg, revision)


def ensure_schema(url: str, *, default_node: str | None = None) -> None:
    """Upgrade to head when behind; a no-op (one query) when current."""
    if current_heads(url) != script_heads(url):
        upgrade(url, default_node=default_node)
