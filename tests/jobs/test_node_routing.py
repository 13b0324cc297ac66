"""Every enqueue of de-identification goes to the queue of the node whose spool holds the file,
whichever host enqueues it: the listener's hook, a retrieve task, a sweep, a job retry, a
dead-letter retry (issue 7 section 4). Here node B does each of them for a file received at node
A, publishing to the filesystem broker; the messages are read back from it."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from sqlalchemy import update

from service.core.config import Settings
from service.core.keys import SiteKeys
from service.core.queues import TaskName
from service.db.models.dicom import ReceivedInstance
from service.db.models.jobs import JobInstance
from service.db.session import get_sessionmaker, session_scope
from service.dicom.uid_keys import uid_key
from service.jobs import ops, recovery
from service.jobs.on_stored import make_on_stored
from service.jobs.routing import enqueue
from service.jobs.transitions import (
    adopt_known,
    check_study,
    claim_study,
    link_received,
    refresh_job,
    retrieval_finished,
)
from tests.jobs.test_state import STUDY, _resolved_job
from workers.tasks.sweep import run_sweep


@pytest.fixture()
def node_b(home: Path, db_url: str) -> Settings:
    s = Settings(home=home, database_url=db_url, node_name="nodeB")
    s.ensure_dirs()
    return s


def _received_at_a(db: str, keys: SiteKeys, n: int = 2) -> list[int]:
    ids = []
    with session_scope(db) as s:
        for i in range(n):
            r = ReceivedInstance(sop_key=uid_key(keys, f"{STUDY}.{i}"), series_key="s",
                                 study_key=uid_key(keys, STUDY), sop_class_uid="1.2",
                                 transfer_syntax="1.2.840.10008.1.2.1",
                                 spool_path=f"/a-spool/{i}.dcm", node="nodeA",
                                 calling_ae="PACS1", size_bytes=1, status="received")
            s.add(r)
            s.flush()
            ids.append(r.id)
    return ids


def _deid_routes(home: Path) -> list[tuple[str, int]]:
    """(queue, instance id) of every de-identification message, in order; consumes them."""
    out = []
    folder = home / "broker" / "queue"
    for f in sorted(folder.iterdir(), key=lambda p: p.stat().st_mtime_ns):
        m = json.loads(f.read_text())
        f.unlink()
        if m["headers"]["task"] != TaskName.DEIDENTIFY_INSTANCE:
            continue
        [iid] = json.loads(base64.b64decode(m["body"]))[0]
        out.append((m["properties"]["delivery_info"]["routing_key"], iid))
    return out


def test_a_node_bound_task_must_name_its_node(node_b: Settings) -> None:
    with pytest.raises(ValueError, match="name that node"):
        enqueue(node_b, TaskName.DEIDENTIFY_INSTANCE, 1)


def test_hook_sweep_and_retrieve_on_b_route_to_a(
    node_b: Settings, site_keys: SiteKeys, jobs_db: str
) -> None:
    _, sid = _resolved_job(jobs_db, node_b, site_keys, expected=2)
    rids = _received_at_a(jobs_db, site_keys, 2)
    with get_sessionmaker(jobs_db)() as s:
        claim_study(s, sid, 60)
    # the hook (its process's node is B here) links the first one
    make_on_stored(node_b)(rids[0])
    # the sweep on B links the other one (its hook never ran) and re-sends the first
    run_sweep(node_b, startup=True)
    routes = _deid_routes(node_b.home)
    assert routes and {q for q, _ in routes} == {"deid.nodeA"}, routes
    with get_sessionmaker(jobs_db)() as s:
        assert {i.node for i in s.query(JobInstance)} == {"nodeA"}
        # a retrieve task on B adopting what the listener held: also A
        s.execute(update(JobInstance).where(JobInstance.received_id == rids[1])
                  .values(study_id=None, job_id=None))
        s.query(JobInstance).filter(JobInstance.received_id == rids[1]).delete()
        s.commit()
        todo = adopt_known(s, sid)
        retrieval_finished(s, sid, complete=True, reason=None)
    assert [n for _, n in todo] == ["nodeA"]


def test_job_retry_and_dead_letter_retry_on_b_route_to_a(
    node_b: Settings, site_keys: SiteKeys, jobs_db: str
) -> None:
    job_id, sid = _resolved_job(jobs_db, node_b, site_keys, expected=2)
    rids = _received_at_a(jobs_db, site_keys, 2)
    with get_sessionmaker(jobs_db)() as s:
        claim_study(s, sid, 60)
        rows = [link_received(s, rid)[0] for rid in rids]
        retrieval_finished(s, sid, complete=True, reason=None)
        ids = [r.id for r in rows if r is not None]
        for iid in ids:  # both kept failing: the job fails
            recovery.dead_letter(s, task=TaskName.DEIDENTIFY_INSTANCE, target=str(iid),
                                 reason="internal: OSError", attempts=6)
        check_study(s, sid)
        assert refresh_job(s, job_id) == "failed"
        ops.retry_job(s, job_id, actor="t", settings=node_b)
        assert sorted(_deid_routes(node_b.home)) == [("deid.nodeA", i) for i in ids]
        recovery.dead_letter(s, task=TaskName.DEIDENTIFY_INSTANCE, target=str(ids[0]),
                             reason="internal: OSError", attempts=6)
        [dl] = [d for d in ops.list_dead_letters(s, job_id=job_id) if d.state == "dead"]
        ops.retry_dead_letter(s, node_b, dl.id, actor="t")
    assert _deid_routes(node_b.home) == [("deid.nodeA", ids[0])]
