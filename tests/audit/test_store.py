"""AuditStore on SQLite and PostgreSQL: idempotence, encryption at rest, lookup, collisions."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from service.audit import (
    AuditStore,
    LookupRefused,
    MappingIntegrityError,
    PseudonymCollision,
)
from service.core.errors import PolicyRefused
from service.core.keys import SiteKeys
from service.db.models.audit import AuditEvent, AuditMapping
from service.db.session import session_scope
from tests.audit.util import originals, outcome, pseudonyms, tamper


def _record(url: str, keys: SiteKeys, *ns: int, job: str | None = "job-1") -> None:
    for n in ns:
        with session_scope(url) as s:
            AuditStore(s, keys).record_outcome(outcome(n), source="cli", job_id=job)


def _count(url: str, model: type) -> int:
    with session_scope(url) as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def test_recording_is_idempotent(migrated_db: str, site_keys: SiteKeys) -> None:
    _record(migrated_db, site_keys, 1, 2)
    assert _count(migrated_db, AuditMapping) == 10
    _record(migrated_db, site_keys, 1, 1, 2)
    assert _count(migrated_db, AuditMapping) == 10
    with session_scope(migrated_db) as s:
        store = AuditStore(s, site_keys)
        events = store.events("deidentified")
        assert [e.details["new_mappings"] for e in events] == [5, 5, 0, 0, 0]
        assert events[0].details["patient"] == "PSN-0001"
        info = store.mappings("2.25.1001")
        assert len(info) == 1 and info[0].kind == "study"
        assert info[0].patient_pseudonym == "PSN-0001" and info[0].job_id == "job-1"
        assert info[0].policy_name == "mammography-screening"
        assert info[0].policy_version == "2026.1"
        assert {m.kind for m in store.mappings(patient="PSN-0002")} == {
            "patient", "study", "series", "instance", "accession"}
        assert store.verify_chain().ok


def test_originals_are_encrypted_at_rest(migrated_db: str, site_keys: SiteKeys,
                                         tmp_path: Path) -> None:
    _record(migrated_db, site_keys, 1, 2, 3)
    secrets = [v for n in (1, 2, 3) for v in originals(n).values()]
    dump = _raw_dump(migrated_db, tmp_path)
    assert b"PSN-0002" in dump  # the dump is real: pseudonyms are there in clear
    for value in secrets:
        assert value.encode() not in dump
        assert value.encode("utf-16-le") not in dump
        assert hashlib.sha256(value.encode()).hexdigest().encode() not in dump
    # nonces are random: the same original recorded under two pseudonyms encrypts differently
    with session_scope(migrated_db) as s:
        cts = list(s.scalars(select(AuditMapping.original_ct)))
    assert len({bytes(c[:12]) for c in cts}) == len(cts)


def _raw_dump(url: str, tmp_path: Path) -> bytes:
    """What someone holding a backup would have: the database file or a pg_dump."""
    if url.startswith("sqlite"):
        engine = create_engine(url)
        with engine.connect() as c:
            c.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        engine.dispose()
        path = Path(url.removeprefix("sqlite:///"))
        return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    out = tmp_path / "dump.sql"
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    subprocess.run(["pg_dump", "--data-only", "-t", "audit_*", "-f", str(out), dsn], check=True)
    return out.read_bytes()


def test_lookup_round_trip_is_logged_first(migrated_db: str, site_keys: SiteKeys) -> None:
    _record(migrated_db, site_keys, 1, 2)
    with session_scope(migrated_db) as s:
        found = AuditStore(s, site_keys).lookup("PSN-0002", reason="incidental finding",
                                                actor="dr-audit")
        assert found == [("patient", originals(2)["patient"])]
        s.rollback()  # the caller rolling back cannot erase the record: lookup committed it
    with session_scope(migrated_db) as s:
        store = AuditStore(s, site_keys)
        assert store.lookup("2.25.1001", reason="r", actor="a") == [
            ("study", originals(1)["study"])]
        (first, second) = store.reidentifications()
        assert first.actor == "dr-audit"
        assert first.details == {"pseudonym": "PSN-0002", "reason": "incidental finding",
                                 "matches": 1, "kinds": ["patient"]}
        assert second.details["pseudonym"] == "2.25.1001"
        assert store.verify_chain().ok
        raw = s.execute(text("SELECT details, actor FROM audit_events")).all()
    assert not any(originals(2)["patient"] in d for d, _ in raw)


def test_lookup_refuses_without_reason_and_logs_misses(migrated_db: str,
                                                       site_keys: SiteKeys) -> None:
    _record(migrated_db, site_keys, 1)
    with session_scope(migrated_db) as s:
        store = AuditStore(s, site_keys)
        for reason in ("", "   "):
            with pytest.raises(LookupRefused):
                store.lookup("PSN-0001", reason=reason, actor="a")
        with pytest.raises(LookupRefused):
            store.lookup("PSN-0001", reason="r", actor=" ")
        assert store.reidentifications() == []
        assert store.lookup("PSN-9999", reason="check", actor="a") == []
        assert store.reidentifications()[0].details["matches"] == 0


def test_find_pseudonyms_by_original(migrated_db: str, site_keys: SiteKeys) -> None:
    _record(migrated_db, site_keys, 1, 2)
    with session_scope(migrated_db) as s:
        store = AuditStore(s, site_keys)
        assert store.find_pseudonyms("patient", originals(2)["patient"], reason="erasure request",
                                     actor="dpo") == ["PSN-0002"]
        assert store.find_pseudonyms("patient", "HOSP-PID-unknown", reason="r", actor="dpo") == []
        ev = store.events("lookup-original")
        assert ev[0].details == {"kind": "patient", "reason": "erasure request",
                                 "pseudonyms": ["PSN-0002"]}


def test_export_mapping(migrated_db: str, site_keys: SiteKeys) -> None:
    _record(migrated_db, site_keys, 1, 2, 1)
    with session_scope(migrated_db) as s:
        store = AuditStore(s, site_keys)
        for kind in ("patient", "study", "series", "instance", "accession"):
            assert list(store.export_mapping(kind)) == [
                (originals(n)[kind], pseudonyms(n)[kind]) for n in (1, 2)]
        assert list(store.export_mapping("uid")) == []
        with pytest.raises(ValueError):
            list(store.export_mapping("name"))


def test_pseudonym_collision_fails_closed(migrated_db: str, site_keys: SiteKeys) -> None:
    _record(migrated_db, site_keys, 1)
    before = _count(migrated_db, AuditEvent)
    # patient 2 forced onto patient 1's pseudonym
    forced = outcome(2, override={"patient": (originals(2)["patient"], "PSN-0001")})
    with pytest.raises(PseudonymCollision) as err, session_scope(migrated_db) as s:
        AuditStore(s, site_keys).record_outcome(forced, source="cli", job_id=None)
    assert isinstance(err.value, PolicyRefused) and err.value.code == "pseudonym-collision"
    assert originals(2)["patient"] not in str(err.value) and "PSN-0001" in str(err.value)
    assert _count(migrated_db, AuditMapping) == 5  # rolled back: nothing of patient 2 kept
    assert _count(migrated_db, AuditEvent) == before


def test_collision_across_uid_kinds_and_within_one_outcome(migrated_db: str,
                                                           site_keys: SiteKeys) -> None:
    _record(migrated_db, site_keys, 1)
    # a new series UID whose pseudonym equals study 1's pseudonym: one UID space, so refused
    forced = outcome(2, override={"series": (originals(2)["series"], pseudonyms(1)["study"])})
    with pytest.raises(PseudonymCollision), session_scope(migrated_db) as s:
        AuditStore(s, site_keys).record_outcome(forced, source="cli", job_id=None)
    # the same original under two UID kinds (a study UID also seen as a referenced UID) is fine
    same = outcome(3)
    same.mappings.append(type(same.mappings[0])("uid", originals(3)["study"],
                                                pseudonyms(3)["study"]))
    with session_scope(migrated_db) as s:
        AuditStore(s, site_keys).record_outcome(same, source="cli", job_id=None)
    # two originals for one pseudonym inside one outcome
    twice = outcome(4)
    twice.mappings.append(type(twice.mappings[0])("patient", "HOSP-OTHER",
                                                  pseudonyms(4)["patient"]))
    with pytest.raises(PseudonymCollision), session_scope(migrated_db) as s:
        AuditStore(s, site_keys).record_outcome(twice, source="cli", job_id=None)
    assert _count(migrated_db, AuditMapping) == 11


def test_ciphertext_moved_to_another_row_does_not_decrypt(migrated_db: str,
                                                           site_keys: SiteKeys) -> None:
    _record(migrated_db, site_keys, 1, 2)
    tamper(migrated_db,
           "UPDATE audit_mappings SET original_ct = (SELECT original_ct FROM audit_mappings "
           "WHERE pseudonym = 'PSN-0002') WHERE pseudonym = 'PSN-0001'")
    with session_scope(migrated_db) as s, pytest.raises(MappingIntegrityError):
        AuditStore(s, site_keys).lookup("PSN-0001", reason="r", actor="a")
    with session_scope(migrated_db) as s:  # the attempt itself stays on record
        assert AuditStore(s, site_keys).reidentifications()[0].details["pseudonym"] == "PSN-0001"


def test_wrong_site_key_cannot_decrypt(migrated_db: str, site_keys: SiteKeys,
                                       tmp_path: Path) -> None:
    _record(migrated_db, site_keys, 1)
    other = SiteKeys.load(tmp_path / "other.key")
    with session_scope(migrated_db) as s, pytest.raises(MappingIntegrityError):
        AuditStore(s, other).lookup("PSN-0001", reason="r", actor="a")


@pytest.mark.parametrize("stmt", [
    "UPDATE audit_events SET actor = 'x'",
    "DELETE FROM audit_events",
    "UPDATE audit_mappings SET pseudonym = 'PSN-X'",
])
def test_triggers_refuse_changes(migrated_db: str, site_keys: SiteKeys, stmt: str) -> None:
    _record(migrated_db, site_keys, 1)
    engine = create_engine(migrated_db)
    try:
        with pytest.raises((DBAPIError, IntegrityError)), engine.begin() as c:
            c.execute(text(stmt))
    finally:
        engine.dispose()
    with session_scope(migrated_db) as s:
        assert AuditStore(s, site_keys).verify_chain().ok


def test_unknown_mapping_kind_is_refused(migrated_db: str, site_keys: SiteKeys) -> None:
    bad = outcome(1)
    bad.mappings.append(type(bad.mappings[0])("name", "DOE^JANE", "X"))  # type: ignore[arg-type]
    with pytest.raises(ValueError), session_scope(migrated_db) as s:
        AuditStore(s, site_keys).record_outcome(bad, source="cli", job_id=None)
    assert _count(migrated_db, AuditMapping) == 0
