"""The auditors' pages on real de-identified data: the per-instance action record (written by
the pipeline in the mappings' transaction, names and actions only), the before/after view,
search, re-identification and lookup by original, each recorded as the CLI records them."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from service.audit.instance_actions import load_instance_actions
from service.core.config import Settings
from service.core.keys import SiteKeys
from service.core.security import Role
from service.db.models.audit import AuditEvent
from service.db.models.deid_actions import DeidActionProfile, DeidInstanceActions
from service.db.session import session_scope
from synthetic.exam import Exam, fresh_exam
from tests.web.conftest import ORIGIN
from tests.web.seed import deidentify

SignedIn = Callable[[Role], tuple[TestClient, str]]


def _phi(exam: Exam) -> list[str]:
    return [exam.patient_id, exam.accession, exam.study_uid, *exam.sop_uids,
            *exam.series_uids]


def test_pipeline_records_names_and_actions_never_values(
    tmp_path: Path, settings: Settings, migrated_db: str
) -> None:
    keys = SiteKeys.for_settings(settings)
    exam = fresh_exam(tmp_path / "exam", index=1)
    results = deidentify(settings, keys, exam)
    with session_scope(settings.db_url) as s:
        assert s.scalar(select(func.count()).select_from(DeidInstanceActions)) == 4
        profiles = list(s.scalars(select(DeidActionProfile)))
        record = load_instance_actions(s, str(results[0].pseudo_sop_instance_uid))
    assert len(profiles) <= 2  # the four views share their list (stored once)
    assert record is not None and record.study_instance_uid == results[0].pseudo_study_uid
    stored = " ".join(p.rows for p in profiles)
    for value in _phi(exam):
        assert value not in stored
    by_kw = {r.keyword: r for r in record.rows}
    assert by_kw["PatientID"].group == "replaced"
    assert by_kw["StudyInstanceUID"].action == "uid"
    assert by_kw["Modality"].group == "kept"
    assert {"removed", "replaced", "kept"} <= set(record.groups())
    assert all(r.rule for r in record.rows)
    # a re-run of the same instance replaces its record, it does not add one
    deidentify(settings, keys, dataclasses.replace(exam, files=exam.files[:1]))
    with session_scope(settings.db_url) as s:
        assert s.scalar(select(func.count()).select_from(DeidInstanceActions)) == 4


def test_auditor_search_reveal_find_and_before_after(
    tmp_path: Path, settings: Settings, migrated_db: str, signed_in: SignedIn
) -> None:
    keys = SiteKeys.for_settings(settings)
    exam = fresh_exam(tmp_path / "exam", index=2)
    results = deidentify(settings, keys, exam)
    patient = str(results[0].patient_pseudonym)
    c, token = signed_in(Role.auditor)
    post = {"headers": {**ORIGIN, "X-CSRF-Token": token, "HX-Request": "true"}}
    r = c.post("/audit/mappings", data={"pseudonym": patient}, **post)
    # patient, study, accession, 4 series, 4 instances
    assert r.status_code == 200 and "11 mappings" in r.text
    assert f"/audit/instances/{results[0].pseudo_sop_instance_uid}" in r.text
    page = c.get(f"/audit/instances/{results[0].pseudo_sop_instance_uid}")
    assert page.status_code == 200
    assert "PatientID" in page.text and "Removed" in page.text
    for value in _phi(exam):
        assert value not in page.text
    assert c.get("/audit/instances/2.25.424242").status_code == 404
    # re-identification: reason and confirmation required; recorded before it is shown
    assert c.post("/audit/reveal", data={"pseudonym": patient, "confirm": "yes"},
                  **post).status_code == 422
    assert c.post("/audit/reveal", data={"pseudonym": patient, "reason": "TICKET-7"},
                  **post).status_code == 422
    r = c.post("/audit/reveal", data={"pseudonym": patient, "reason": "TICKET-7",
                                      "confirm": "yes"}, **post)
    assert r.status_code == 200 and exam.patient_id in r.text
    assert r.headers["cache-control"] == "no-store"
    r = c.post("/audit/find", data={"kind": "accession", "original": exam.accession,
                                    "reason": "TICKET-8"}, **post)
    assert r.status_code == 200 and "1 pseudonym found" in r.text
    with session_scope(settings.db_url) as s:
        events = {e.kind: json.loads(e.details) for e in s.scalars(select(AuditEvent))}
        every = " ".join(e.details for e in s.scalars(select(AuditEvent)))
    assert events["reidentify"]["reason"] == "TICKET-7"
    assert events["reidentify"]["pseudonym"] == patient
    assert events["lookup-original"]["reason"] == "TICKET-8"
    assert exam.accession not in every and exam.patient_id not in every
    log = c.get("/audit/log")
    assert "TICKET-7" in log.text and "user:auditor-user" in log.text and "TICKET-8" in log.text
    verify = c.post("/audit/chain/verify", **post)
    assert verify.status_code == 200 and "The audit chain is intact" in verify.text
