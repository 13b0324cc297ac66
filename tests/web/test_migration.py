"""The web branch (0007): its tables match the models, and it downgrades and upgrades alone."""

from __future__ import annotations

from alembic import command
from sqlalchemy import inspect

from service.db.base import Base
from service.db.migrate import alembic_config
from service.db.session import get_engine
from tests.api.test_migrations import _tables

MINE = {"web_users", "web_sessions", "web_login_failures", "sweep_heartbeats",
        "deid_action_profiles", "deid_instance_actions"}


def test_models_match_migration(migrated_db: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    assert set(Base.metadata.tables) >= MINE
    with get_engine(migrated_db).connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert [d for d in diffs if _tables(d) & MINE] == []


def test_web_branch_downgrades_and_upgrades_alone(migrated_db: str) -> None:
    cfg = alembic_config(migrated_db)
    engine = get_engine(migrated_db)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "web@-1")
    names = set(inspect(engine).get_table_names())
    assert not names & MINE
    assert {"api_tokens", "audit_events"} <= names  # other branches untouched
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "web@head")
    assert set(inspect(engine).get_table_names()) >= MINE
