"""Fixtures for the jobs area: a migrated database with one PACS node, a seeded job."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from service.core.config import Settings
from service.core.keys import SiteKeys
from service.db.session import session_scope


@pytest.fixture()
def jobs_db(settings: Settings, migrated_db: str) -> str:
    from service.dicom import admin

    with session_scope(migrated_db) as s:
        admin.seed(s, settings)
        admin.add_node(s, "pacs1", ae_title="PACS1", host="127.0.0.1", port=104)
        admin.add_node(s, "research", ae_title="RESEARCH", host="127.0.0.1", port=105)
    return migrated_db


def submit(session: Session, settings: Settings, keys: SiteKeys, **req: object) -> str:
    from service.jobs import ops

    data = {"pacs": "pacs1", "accession_numbers": ["ACC0001", "ACC0002"], **req}
    return ops.submit_job(session, settings, keys, ops.parse_job_request(data),
                          actor="test").id
