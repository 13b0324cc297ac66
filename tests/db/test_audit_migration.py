"""Migration 0002_audit on both back-ends: tables, the chain-head row, append-only triggers,
and a clean downgrade of the audit branch alone."""

from __future__ import annotations

from alembic import command
from sqlalchemy import inspect, text

from service.db.migrate import alembic_config, current_heads, script_heads, upgrade
from service.db.models.audit import GENESIS_HASH
from service.db.session import get_engine

TABLES = {"audit_mappings", "audit_events", "audit_chain_head"}


def _triggers(url: str) -> set[str]:
    engine = get_engine(url)
    with engine.connect() as c:
        if engine.dialect.name == "postgresql":
            rows = c.execute(text("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal"))
        else:
            rows = c.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger'"))
        return {r[0] for r in rows if r[0].startswith("audit_")}


def test_upgrade_from_empty_creates_the_audit_schema(db_url: str) -> None:
    assert current_heads(db_url) == set()
    upgrade(db_url)
    assert "0011_mapping_key_id" in current_heads(db_url)
    assert current_heads(db_url) == script_heads(db_url)
    assert set(inspect(get_engine(db_url)).get_table_names()) >= TABLES
    with get_engine(db_url).connect() as c:
        assert c.execute(text("SELECT id, seq, hash FROM audit_chain_head")).all() == [
            (1, 0, GENESIS_HASH)]
    assert len(_triggers(db_url)) >= 3


def test_audit_branch_downgrades_alone(migrated_db: str) -> None:
    cfg = alembic_config(migrated_db)
    with get_engine(migrated_db).begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "audit@-1")  # 0011_mapping_key_id: back to 0002_audit
    assert "0002_audit" in current_heads(migrated_db)
    assert len(_triggers(migrated_db)) >= 3  # the full "no update" trigger is back
    with get_engine(migrated_db).begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "audit@-1")
    heads = current_heads(migrated_db)
    assert "0002_audit" not in heads and heads  # the other areas stay
    assert not TABLES & set(inspect(get_engine(migrated_db)).get_table_names())
    assert _triggers(migrated_db) == set()
    upgrade(migrated_db)
    assert current_heads(migrated_db) == script_heads(migrated_db)
