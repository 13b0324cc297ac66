"""The auth and triage tables: migrations match the models, and each branch downgrades alone."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from service.db.base import Base
from service.db.migrate import alembic_config
from service.db.session import get_engine

MINE = {"api_tokens", "triage_entries", "score_results"}


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
            command.downgrade(cfg, f"{branch}@base")  # triage has two revisions (0005, 0008)
        assert table not in inspect(engine).get_table_names()
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, f"{branch}@head")
        assert table in inspect(engine).get_table_names()


def test_scoring_revision_downgrades_alone_and_keeps_worklist_rows(migrated_db: str) -> None:
    """0008 off and on again: score_results goes, triage_entries and its rows stay."""
    from sqlalchemy import text

    cfg = alembic_config(migrated_db)
    engine = get_engine(migrated_db)
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO triage_entries (exam, patient_pseudonym, score, category, model_version,"
            " scored_at, arrived_at) VALUES ('2.25.7', 'P', 0.4, 'standard', 'v1',"
            " CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0005_triage")
    assert "score_results" not in inspect(engine).get_table_names()
    cols = {c["name"] for c in inspect(engine).get_columns("triage_entries")}
    assert "result_id" not in cols and "arrived_at" not in cols
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "triage@head")
    with engine.connect() as conn:
        row = conn.execute(text("SELECT exam, result_id, arrived_at FROM triage_entries")).one()
    assert row[0] == "2.25.7" and row[1] is None and row[2] is not None
    assert "score_results" in inspect(engine).get_table_names()
