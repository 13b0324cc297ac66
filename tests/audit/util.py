"""Test helpers: outcomes built directly (no engine needed) and raw-SQL tampering."""

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
