"""No PHI in any GET response, for any role: with a job submitted by patient IDs, mappings
recorded and the worklist filled, every readable endpoint (enumerated from the app) is fetched
by every role it admits and searched for every original value. Only POST /audit/lookup (an
auditor's recorded re-identification) may return originals."""

from __future__ import annotations

import re

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydicom import Dataset

from service.api.deps import api_operations
from service.audit.store import AuditStore
from service.audit.types import Mapping
from service.core.config import Settings
from service.core.keys import SiteKeys
from service.core.security import Role
from service.db.models.triage import TriageEntry
from service.db.session import session_scope
from tests.api.conftest import bearer
from workers.deid.outcome import DeidOutcome

PATIENT_IDS = ["01017012345", "02028054321"]
ACCESSION = "A7788990011"
STUDY_UID = "1.2.826.0.1.3680043.99.424242"
ORIGINALS = [*PATIENT_IDS, ACCESSION, STUDY_UID]
PATIENT_PSN, STUDY_PSN = "PQ2ZLT7B6YV5KDXAM3RC", "2.25.987654321"


@pytest.fixture()
def world(
    client: TestClient, tokens: dict[Role, str], settings: Settings, migrated_db: str
) -> dict[str, str]:
    admin = bearer(tokens[Role.admin])
    node = {"name": "pacs1", "ae_title": "ORTHANC", "host": "127.0.0.1", "port": 4242}
    assert client.post("/api/v1/admin/nodes", json=node, headers=admin).status_code == 201
    r = client.post(
        "/api/v1/jobs",
        json={"pacs": "pacs1", "policy": "dicom-basic-profile", "patient_ids": PATIENT_IDS},
        headers=bearer(tokens[Role.service]),
    )
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    outcome = DeidOutcome(
        dataset=Dataset(),
        sop_class_uid="1.2.840.10008.5.1.4.1.1.1.2",
        sop_instance_uid="2.25.1",
        study_instance_uid=STUDY_PSN,
        series_instance_uid="2.25.2",
        patient_pseudonym=PATIENT_PSN,
        mappings=[
            Mapping("patient", PATIENT_IDS[0], PATIENT_PSN),
            Mapping("study", STUDY_UID, STUDY_PSN),
            Mapping("accession", ACCESSION, "ACCPSN0001"),
        ],
        policy_name="dicom-basic-profile",
        policy_version="1",
    )
    with session_scope(migrated_db) as s:
        AuditStore(s, SiteKeys.load(settings.site_key_path)).record_outcome(
            outcome, source="scu:ORTHANC", job_id=job_id
        )
        s.add(TriageEntry(exam=STUDY_PSN, patient_pseudonym=PATIENT_PSN, score=0.8,
                          category="priority", model_version="m1",
                          accession_pseudonym="ACCPSN0001"))
    return {"job_id": job_id, "pseudonym": PATIENT_PSN, "name": "pacs1", "exam": STUDY_PSN}


def test_no_original_in_any_get_response(
    app: FastAPI, client: TestClient, tokens: dict[Role, str], world: dict[str, str]
) -> None:
    fetched = 0
    for method, path, roles in api_operations(app):
        if method != "GET" or roles is None:
            continue
        url = re.sub(r"\{(\w+)\}", lambda m: world[m.group(1)], path)
        for role in roles:
            r = client.get(url, headers=bearer(tokens[role]))
            assert r.status_code == 200, (url, role, r.text)
            for original in ORIGINALS:
                assert original not in r.text, (url, role)
            fetched += 1
    assert fetched >= 20
    # the data is really there: the auditor's recorded lookup does find the originals
    r = client.post(
        "/api/v1/audit/lookup",
        json={"pseudonym": STUDY_PSN, "reason": "sweep test, protocol 7"},
        headers=bearer(tokens[Role.auditor]),
    )
    assert r.json()["matches"] == [{"kind": "study", "original": STUDY_UID}]
