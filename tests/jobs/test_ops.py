"""The shared job operations on SQLite and PostgreSQL: sealed storage, PHI-free views, state
rules for cancel and retry, and a real publish to the server-less broker."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from service.core.config import Settings
from service.core.keys import SiteKeys
from service.db.session import session_scope
from service.jobs import ops
from tests.jobs.conftest import submit

ACC = "BSN24031500417"


def test_submit_seals_the_request_and_views_hold_no_phi(
    settings: Settings, site_keys: SiteKeys, jobs_db: str
) -> None:
    with session_scope(jobs_db) as s:
        job_id = submit(s, settings, site_keys, accession_numbers=[ACC])
    with session_scope(jobs_db) as s:
        raw = s.execute(text("SELECT request_sealed, selector, requested FROM jobs")).one()
        view = ops.get_job(s, job_id)
        listed = ops.list_jobs(s)
    assert ACC.encode() not in bytes(raw[0])
    assert (raw[1], raw[2]) == ("accession_numbers", 1)
    assert view is not None and view.state == "queued" and view.policy == "mammography-screening"
    assert ACC not in view.model_dump_json() and [v.id for v in listed] == [job_id]
    # the publish reached the (server-less) broker: a message file exists in the data folder
    queue = settings.home / "broker" / "queue"
    assert any(queue.iterdir())


def test_unknown_node_or_policy_is_refused_at_submission(
    settings: Settings, site_keys: SiteKeys, jobs_db: str
) -> None:
    with session_scope(jobs_db) as s, pytest.raises(ops.InvalidJobRequest, match="no PACS node"):
        submit(s, settings, site_keys, pacs="nope")
    with session_scope(jobs_db) as s, pytest.raises(ops.InvalidJobRequest, match="destination"):
        submit(s, settings, site_keys, destination="nope")
    with session_scope(jobs_db) as s, pytest.raises(ops.InvalidJobRequest, match="policy"):
        submit(s, settings, site_keys, policy="no-such-policy")
    with session_scope(jobs_db) as s:
        assert ops.list_jobs(s) == []


def test_cancel_and_retry_rules(settings: Settings, site_keys: SiteKeys, jobs_db: str) -> None:
    with session_scope(jobs_db) as s:
        job_id = submit(s, settings, site_keys)
        with pytest.raises(ops.InvalidJobRequest, match="only finished jobs"):
            ops.retry_job(s, job_id, actor="t")
        v = ops.cancel_job(s, job_id, actor="t", keys=site_keys)
        assert v.state == "cancelled" and v.reason == "cancelled by t"
        with pytest.raises(ops.InvalidJobRequest, match="already cancelled"):
            ops.cancel_job(s, job_id, actor="t")
        with pytest.raises(ops.JobNotFound):
            ops.cancel_job(s, "0" * 32, actor="t")
        v = ops.retry_job(s, job_id, actor="t", settings=settings, keys=site_keys)
        assert v.state == "queued" and v.reason is None  # never resolved: resolve again
        assert ops.list_jobs(s, state="queued")[0].id == job_id
        assert ops.list_jobs(s, state="done") == []
