"""Migration 0009 on both back-ends: job_instances.received_key (text) becomes received_id, an
integer foreign key, keeping the links of rows already present; the downgrade gives them back."""

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

JOBS_TABLES = {"jobs", "job_studies", "job_instances", "dead_letters", "dicom_received_instances"}


def _before(url: str) -> None:
    """The schema as it was before 0009 (jobs and dicom branches), with rows in it."""
    upgrade(url, "0003_dicom")
    upgrade(url, "0006_jobs")
    with get_engine(url).begin() as c:
        c.execute(text(
            "INSERT INTO jobs (id, state, pacs, policy, selector, requested, request_sealed, "
            "actor, attempts, created_at, updated_at) VALUES ('j1', 'retrieving', 'p', 'pol', "
            "'accession_numbers', 1, :b, 'a', 0, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"),
            {"b": b"x"})
        for i in (1, 2):
            c.execute(text(
                "INSERT INTO dicom_received_instances (id, sop_key, series_key, study_key, "
                "sop_class_uid, transfer_syntax, spool_path, calling_ae, size_bytes, "
                "received_at, status) VALUES (:i, :k, 's', 't', '1.2', '1.2', '/s', 'AE', 1, "
                "CURRENT_TIMESTAMP, 'queued')"), {"i": i * 10, "k": f"sop{i}"})
        for rid, job in (("10", "j1"), ("20", "j1"), ("10", None)):
            c.execute(text(
                "INSERT INTO job_instances (received_key, job_id, spool_path, node, state, "
                "attempts, created_at, updated_at) VALUES (:r, :j, '/s', 'n', 'pending', 0, "
                "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"), {"r": rid, "j": job})


def _links(url: str, column: str) -> list[tuple[object, object]]:
    with get_engine(url).connect() as c:
        return [tuple(r) for r in c.execute(text(
            f"SELECT job_id, {column} FROM job_instances ORDER BY id"))]  # noqa: S608 - fixed


def test_upgrade_keeps_links_and_adds_the_foreign_key(db_url: str) -> None:
    _before(db_url)
    upgrade(db_url)
    assert current_heads(db_url) == script_heads(db_url)
    assert _links(db_url, "received_id") == [("j1", 10), ("j1", 20), (None, 10)]
    insp = inspect(get_engine(db_url))
    assert "received_key" not in {c["name"] for c in insp.get_columns("job_instances")}
    assert any(fk["referred_table"] == "dicom_received_instances"
               and fk["constrained_columns"] == ["received_id"]
               for fk in insp.get_foreign_keys("job_instances"))
    with get_engine(db_url).connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert [d for d in diffs if _tables(d) & JOBS_TABLES] == []
    with pytest.raises(IntegrityError), get_engine(db_url).begin() as c:  # no dangling link
        c.execute(text(
            "INSERT INTO job_instances (received_id, spool_path, node, state, attempts, "
            "created_at, updated_at) VALUES (99, '/s', 'n', 'pending', 0, CURRENT_TIMESTAMP, "
            "CURRENT_TIMESTAMP)"))
    with pytest.raises(IntegrityError), get_engine(db_url).begin() as c:  # still one per job
        c.execute(text(
            "INSERT INTO job_instances (received_id, job_id, spool_path, node, state, attempts, "
            "created_at, updated_at) VALUES (20, 'j1', '/s', 'n', 'pending', 0, "
            "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))

    cfg = alembic_config(db_url)
    with get_engine(db_url).begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0006_jobs")  # back past 0009 (and 0010 above it)
    assert _links(db_url, "received_key") == [("j1", "10"), ("j1", "20"), (None, "10")]
    upgrade(db_url)
    assert _links(db_url, "received_id") == [("j1", 10), ("j1", 20), (None, 10)]


def test_upgrade_stops_on_a_link_to_nothing(db_url: str) -> None:
    _before(db_url)
    with get_engine(db_url).begin() as c:
        c.execute(text("UPDATE job_instances SET received_key = '77' WHERE received_key = '20'"))
    with pytest.raises(RuntimeError, match="1 job instance rows"):
        upgrade(db_url)
    assert "0009_job_instance_received_id" not in current_heads(db_url)
    assert len(_links(db_url, "received_key")) == 3  # nothing dropped
