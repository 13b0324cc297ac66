"""Migration 0013_dicom_tls on both back-ends: existing nodes and allow-list entries keep plain
DICOM, the mode is constrained, the models match, and the revision downgrades alone."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from service.db.base import Base
from service.db.migrate import alembic_config, current_heads, script_heads, upgrade
from service.db.session import get_engine
from tests.api.test_migrations import _tables

TABLES = {"dicom_pacs_nodes", "dicom_allowed_callers"}
TLS_COLUMNS = {"tls_mode", "tls_pin_sha256", "tls_pin_name", "tls_allow_plain"}


def _columns(url: str, table: str) -> set[str]:
    return {c["name"] for c in inspect(get_engine(url)).get_columns(table)}


def test_existing_rows_stay_plain_and_the_mode_is_constrained(db_url: str) -> None:
    upgrade(db_url, "0012_received_node")
    with get_engine(db_url).begin() as c:
        c.execute(text("INSERT INTO dicom_pacs_nodes (name, ae_title, host, port, retrieve, "
                       "max_associations, created_at) VALUES ('pacs1', 'PACS1', 'h', 104, "
                       "'move', 2, CURRENT_TIMESTAMP)"))
        c.execute(text("INSERT INTO dicom_allowed_callers (ae_title, created_at) "
                       "VALUES ('MOD', CURRENT_TIMESTAMP)"))
    upgrade(db_url)
    assert current_heads(db_url) == script_heads(db_url)
    with get_engine(db_url).connect() as c:
        for table in TABLES:
            row = c.execute(text(f"SELECT tls_mode, tls_pin_sha256, tls_pin_name, "  # noqa: S608
                                 f"tls_allow_plain FROM {table}")).one()
            assert tuple(row) == ("off", None, None, False)
    for table in TABLES:
        with pytest.raises(IntegrityError), get_engine(db_url).begin() as c:
            c.execute(text(f"UPDATE {table} SET tls_mode = 'ssl3'"))  # noqa: S608
    with get_engine(db_url).connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert [d for d in diffs if _tables(d) & TABLES] == []


def test_downgrade_alone_keeps_the_rows(migrated_db: str) -> None:
    with get_engine(migrated_db).begin() as c:
        c.execute(text("INSERT INTO dicom_allowed_callers (ae_title, created_at, tls_mode) "
                       "VALUES ('MOD', CURRENT_TIMESTAMP, 'mtls-required')"))
    cfg = alembic_config(migrated_db)
    with get_engine(migrated_db).begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0013_dicom_tls-1")
    for table in TABLES:
        assert not TLS_COLUMNS & _columns(migrated_db, table)
    with get_engine(migrated_db).connect() as c:
        assert c.execute(text("SELECT ae_title FROM dicom_allowed_callers")).scalars().all() == [
            "MOD"]
    upgrade(migrated_db)
    for table in TABLES:
        assert _columns(migrated_db, table) >= TLS_COLUMNS
