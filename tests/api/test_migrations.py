"""The auth and triage tables: migrations match the models, and each branch downgrades alone."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from service.db.base import Base
from service.db.migrate import alembic_config
from service.db.session import get_engine

MINE = {"api_tokens", "triage_entries"}


def _tables(diff: object) -> set[str]:
    """Table names a compare_metadata entry concerns (entries are tuples, or lists of them)."""
    parts = diff if isinstance(diff, list) else [diff]
    names: set[str] = set()
    for part in parts:
        for x in part if isinstance(part, tuple) else (part,):
            if isinstance(x, str):
                names.add(x)
            for obj in (x, getattr(x, "table", None)):
                name = getattr(obj, "name", None)
                if isinstance(name, str) and obj is not None and hasattr(obj, "columns"):
                    names.add(name)
    return names


def test_models_match_migrations(migrated_db: str) -> None:
    with get_engine(migrated_db).connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    mine = [d for d in diffs if _tables(d) & MINE]
    assert mine == []


def test_branches_downgrade_and_upgrade_alone(migrated_db: str) -> None:
    cfg = alembic_config(migrated_db)
    engine = get_engine(migrated_db)
    for branch, table in (("auth", "api_tokens"), ("triage", "triage_entries")):
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, f"{branch}@-1")
        assert table not in inspect(engine).get_table_names()
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, f"{branch}@head")
        assert table in inspect(engine).get_table_names()
