"""Test helpers: outcomes built directly (no engine needed) and raw-SQL tampering."""

# Tampering is raw SQL by design (what a superuser would run); the values are test constants.
# ruff: noqa: S608

from __future__ import annotations

from pydicom.dataset import Dataset
from sqlalchemy import create_engine

from service.audit.types import Mapping
from workers.deid.outcome import DeidOutcome, PixelDecision

_DROP = {
    "postgresql": [
        "DROP TRIGGER IF EXISTS audit_events_no_update_delete ON audit_events",
        "DROP TRIGGER IF EXISTS audit_mappings_no_update ON audit_mappings",
    ],
    "sqlite": [
        "DROP TRIGGER IF EXISTS audit_events_no_update",
        "DROP TRIGGER IF EXISTS audit_events_no_delete",
        "DROP TRIGGER IF EXISTS audit_mappings_no_update",
    ],
}


def originals(n: int) -> dict[str, str]:
    """Identifiers that look like a hospital's, distinctive enough to grep a dump for."""
    return {
        "patient": f"HOSP-PID-77{n:04d}",
        "study": f"1.2.826.0.1.3680043.9.7777.{n}.1",
        "series": f"1.2.826.0.1.3680043.9.7777.{n}.1.2",
        "instance": f"1.2.826.0.1.3680043.9.7777.{n}.1.2.3",
        "accession": f"ACCNO-99{n:04d}",
    }


def pseudonyms(n: int) -> dict[str, str]:
    return {
        "patient": f"PSN-{n:04d}",
        "study": f"2.25.{1000 + n}",
        "series": f"2.25.{2000 + n}",
        "instance": f"2.25.{3000 + n}",
        "accession": f"ACC-PSN-{n:04d}",
    }


def outcome(n: int, *, override: dict[str, tuple[str, str]] | None = None) -> DeidOutcome:
    """Instance ``n`` of patient ``n``; ``override`` swaps in {kind: (original, pseudonym)}."""
    orig, psn = originals(n), pseudonyms(n)
    pairs = {k: (orig[k], psn[k]) for k in orig}
    pairs.update(override or {})
    ds = Dataset()
    ds.PatientID = pairs["patient"][1]
    ds.SOPInstanceUID = pairs["instance"][1]
    return DeidOutcome(
        dataset=ds,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.1.2",
        sop_instance_uid=pairs["instance"][1],
        study_instance_uid=pairs["study"][1],
        series_instance_uid=pairs["series"][1],
        patient_pseudonym=pairs["patient"][1],
        mappings=[Mapping(k, o, p) for k, (o, p) in pairs.items()],  # type: ignore[arg-type]
        pixel=PixelDecision(action="unchanged"),
        policy_name="mammography-screening",
        policy_version="2026.1",
        action_counts={"remove": 3},
    )


def tamper(url: str, *statements: str) -> None:
    """Raw SQL as a superuser would run it: drop the append-only triggers first."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            for stmt in _DROP[engine.dialect.name]:
                conn.exec_driver_sql(stmt)
            for stmt in statements:
                conn.exec_driver_sql(stmt)
    finally:
        engine.dispose()


_NOT_NULL_PG = ("seq", "at", "kind", "actor", "details", "prev_hash", "hash")


def store_unreadable(url: str, seq: int, column: str, value: str | None) -> None:
    """Put ``value`` (SQL literal text, or None for NULL) into ``column`` of event ``seq``, doing
    whatever schema change an attacker who owns the database needs for it to be stored.

    SQLite: NULL needs the NOT NULL constraints gone and a text ``seq`` needs the rowid alias
    gone, so the table is rebuilt without constraints (CREATE TABLE AS SELECT), as anyone with
    write access to the file can. PostgreSQL: a non-integer ``seq`` or a non-timestamp ``at``
    needs the column retyped to text; NULL needs DROP NOT NULL (and the primary key, for seq).
    """
    literal = "NULL" if value is None else value
    engine = create_engine(url)
    dialect = engine.dialect.name
    engine.dispose()
    schema: list[str] = []
    if dialect == "sqlite":
        if value is None or column == "seq":
            schema = ["CREATE TABLE audit_events_loose AS SELECT * FROM audit_events",
                      "DROP TABLE audit_events",
                      "ALTER TABLE audit_events_loose RENAME TO audit_events"]
    else:
        assert column in _NOT_NULL_PG
        if value is None:
            if column == "seq":
                schema.append("ALTER TABLE audit_events DROP CONSTRAINT pk_audit_events")
            schema.append(f"ALTER TABLE audit_events ALTER COLUMN {column} DROP NOT NULL")
        elif column in ("seq", "at"):
            schema.append(f"ALTER TABLE audit_events ALTER COLUMN {column} TYPE text "
                          f"USING {column}::text")
    tamper(url, *schema, f"UPDATE audit_events SET {column} = {literal} WHERE seq = '{seq}'")


def store_unreadable_head(url: str, column: str, value: str | None) -> None:
    """Junk or NULL in the chain head row (``seq`` or ``hash``), schema loosened as needed."""
    literal = "NULL" if value is None else value
    engine = create_engine(url)
    dialect = engine.dialect.name
    engine.dispose()
    schema: list[str] = []
    if dialect == "sqlite":
        if value is None:
            schema = ["CREATE TABLE head_loose AS SELECT * FROM audit_chain_head",
                      "DROP TABLE audit_chain_head",
                      "ALTER TABLE head_loose RENAME TO audit_chain_head"]
    elif value is None:
        schema = [f"ALTER TABLE audit_chain_head ALTER COLUMN {column} DROP NOT NULL"]
    elif column == "seq":
        schema = ["ALTER TABLE audit_chain_head ALTER COLUMN seq TYPE text USING seq::text"]
    tamper(url, *schema, f"UPDATE audit_chain_head SET {column} = {literal}")
