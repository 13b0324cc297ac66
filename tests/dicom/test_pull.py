"""Query/retrieve against Orthanc (C-FIND, C-MOVE to our listener, C-GET) and fault PACSs.

``retrieve_study`` is one attempt; ``_until_final`` drives attempts the way the retrieve task
does (the task waits ``retry_in`` through Celery's countdown; here the backoff is tiny)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from service.core.config import Settings
from service.core.keys import SiteKeys
from service.db.session import session_scope
from service.dicom import admin
from service.dicom import find as f
from service.dicom import pull as r
from service.dicom.admin import NodeConfig
from service.dicom.listener import Listener
from service.dicom.scu import Timeouts, echo
from service.dicom.uid_keys import uid_key
from synthetic.exam import fresh_exam
from tests.peers.dcmtk import storescu
from tests.peers.fakepacs import fake_pacs
from tests.peers.fixtures import GATEWAY_AE, GETTER_AE
from tests.peers.net import free_port
from tests.peers.orthanc import OrthancPeer, orthanc_server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
FAST = r.RetryPolicy(attempts=3, backoff_s=0.05, timeouts=Timeouts(connect=5, dimse=20,
                                                                   network=20, slot=20))


def _node(pacs: OrthancPeer, retrieve: str = "move") -> NodeConfig:
    return NodeConfig("orthanc", pacs.ae_title, "127.0.0.1", pacs.dicom_port,
                      "get" if retrieve == "get" else "move", 2)


def _ctx(keys: SiteKeys, db: str | None = None, local_ae: str = GATEWAY_AE) -> r.PullContext:
    """Arrivals as the listener records them in ``db``; none at all without one."""
    received = (lambda key: r.received_keys(db, key)) if db else (lambda key: set())
    return r.PullContext(local_ae, keys, received)


def _until_final(node: NodeConfig, study: f.StudyMatch, ctx: r.PullContext,
                 retry: r.RetryPolicy = FAST, **kw: Any) -> r.RetrieveReport:
    attempt = 1
    while True:
        rep = r.retrieve_study(node, study, ctx, attempt=attempt, retry=retry, **kw)
        if rep.status != "retry":
            return rep
        assert rep.retry_in == retry.delay(attempt)
        time.sleep(rep.retry_in)
        attempt += 1


def _listen(url: str, keys: SiteKeys, tmp: Path, port: int, start: Callable[..., Listener],
            *callers: str) -> Listener:
    with session_scope(url) as s:
        for c in callers or ("ORTHANC",):
            admin.allow(s, c)
    return start(url, keys, tmp / "spool", port=port)


def test_find_by_each_criterion_with_counts(orthanc_pacs: OrthancPeer, site_keys: SiteKeys,
                                            tmp_path: Path) -> None:
    exams = [fresh_exam(tmp_path / f"e{i}", index=100 + i, study_date=f"2025030{i + 1}",
                       views=2 + i) for i in range(3)]
    for e in exams:
        orthanc_pacs.upload(*e.files)
    ct = dcmread(str(get_testdata_file("CT_small.dcm")))
    ct.StudyDate = "20250302"  # in the date range, but not MG: must be filtered out
    ct_path = tmp_path / "ct.dcm"
    ct.save_as(ct_path)
    orthanc_pacs.upload(ct_path)
    node = _node(orthanc_pacs)
    kw: dict[str, Any] = {"local_ae": GATEWAY_AE, "keys": site_keys}

    by_acc = f.find_studies(node, {"accession_numbers": [exams[0].accession]}, **kw)
    assert [(m.study_uid, m.expected, m.count_source) for m in by_acc] == [
        (exams[0].study_uid, 2, "study")]
    assert exams[0].study_uid not in repr(by_acc)
    assert by_acc[0].study_key[:12] in repr(by_acc)
    by_pid = f.find_studies(node, f.RetrieveRequest(patient_ids=(exams[1].patient_id,)), **kw)
    assert [(m.study_uid, m.expected) for m in by_pid] == [(exams[1].study_uid, 3)]
    by_uid = f.find_studies(node, {"study_instance_uids": [exams[2].study_uid,
                                                           exams[2].study_uid]}, **kw)
    assert [(m.study_uid, m.expected) for m in by_uid] == [(exams[2].study_uid, 4)]
    found: list[int] = []
    by_date = f.find_studies(node, {"query": {"date_from": "2025-03-01",
                                              "date_to": "2025-03-02", "modality": "MG"}},
                             progress=found.append, **kw)
    assert sorted(m.study_uid for m in by_date) == sorted(e.study_uid for e in exams[:2])
    assert found == [1, 2]
    assert repr(f.RetrieveRequest(patient_ids=(exams[1].patient_id,))).count(
        exams[1].patient_id) == 0


def test_move_whole_study_then_only_missing(orthanc_pacs: OrthancPeer, migrated_db: str,
                                            site_keys: SiteKeys, tmp_path: Path,
                                            gateway_port: int,
                                            start_listener: Callable[..., Listener]) -> None:
    _listen(migrated_db, site_keys, tmp_path, gateway_port, start_listener, "ORTHANC",
            "STORESCU")
    a = fresh_exam(tmp_path / "a", index=200, study_date="20250401")
    b = fresh_exam(tmp_path / "b", index=201, study_date="20250401")
    orthanc_pacs.upload(*a.files, *b.files)
    node = _node(orthanc_pacs)
    [sa] = f.find_studies(node, {"accession_numbers": [a.accession]}, local_ae=GATEWAY_AE,
                          keys=site_keys)
    seen: list[r.RetrieveProgress] = []
    rep = _until_final(node, sa, _ctx(site_keys, migrated_db), progress=seen.append)
    assert (rep.status, rep.expected, rep.received, rep.attempts, rep.completed_subops) == (
        "complete", 4, 4, 1, 4)
    assert r.received_keys(migrated_db, sa.study_key) == {uid_key(site_keys, u)
                                                         for u in a.sop_uids}
    assert seen[0].phase == "moving" and seen[-1].phase == "done"
    assert any(p.remaining is not None for p in seen)
    assert a.study_uid not in repr(rep) + repr(seen)

    # two of four already here (say, an earlier interrupted pull): only the other two move
    assert storescu(gateway_port, b.files[:2]).returncode == 0
    sb = f.StudyMatch.known(b.study_uid, site_keys, 4)
    assert sb.study_key == uid_key(site_keys, b.study_uid)
    rep = _until_final(node, sb, _ctx(site_keys, migrated_db))
    assert (rep.status, rep.received, rep.completed_subops) == ("complete", 4, 2)
    # resumed again: nothing to do, no association needed
    rep = r.retrieve_study(node, sb, _ctx(site_keys, migrated_db), attempt=3)
    assert (rep.status, rep.attempts) == ("complete", 0)


def test_get_node_stores_through_the_spool_with_settings(
        orthanc_pacs: OrthancPeer, sqlite_db: str, home: Path, tmp_path: Path) -> None:
    settings = Settings(home=home, database_url=sqlite_db)
    settings.ensure_dirs()
    with session_scope(sqlite_db) as s:
        admin.set_local_ae(s, settings, ae_title=GETTER_AE)
    e = fresh_exam(tmp_path / "g", index=300, study_date="20250501")
    orthanc_pacs.upload(*e.files)
    node = _node(orthanc_pacs, "get")
    ctx = r.PullContext.for_settings(settings, node)
    assert ctx.local_ae == GETTER_AE and ctx.sink is not None
    rep = _until_final(node, f.StudyMatch.known(e.study_uid, ctx.keys, 4), ctx)
    assert (rep.status, rep.received, rep.completed_subops) == ("complete", 4, 4)
    files = sorted(settings.spool_dir.glob("*.dcm"))
    assert len(files) == 4
    assert {str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files} == set(
        e.sop_uids)


def test_unreachable_and_refused_destination_fail_with_reasons(
        orthanc_pacs: OrthancPeer, site_keys: SiteKeys, tmp_path: Path) -> None:
    closed = NodeConfig("gone", "NOBODY", "127.0.0.1", free_port())
    rep = _until_final(closed, f.StudyMatch.known("1.2.3.4", site_keys, 1), _ctx(site_keys))
    assert (rep.status, rep.reason, rep.attempts) == ("failed", "pacs-refused", 3)
    assert echo(closed, GATEWAY_AE, timeout=3).failure == "refused"
    assert echo(_node(orthanc_pacs), GATEWAY_AE).ok

    e = fresh_exam(tmp_path / "d", index=400, views=1)
    with orthanc_server(tmp_path / "strict", ae_title="STRICT", extra={
            "DicomAlwaysAllowMove": True, "DicomAlwaysAllowFind": True}) as strict:
        strict.upload(*e.files)
        node = NodeConfig("strict", "STRICT", "127.0.0.1", strict.dicom_port)
        rep = _until_final(node, f.StudyMatch.known(e.study_uid, site_keys, 1),
                           _ctx(site_keys, local_ae="UNKNOWNDEST"))
    # Orthanc 1.10 answers an unknown destination with 0xC000 and no sub-operation (not 0xA801)
    assert (rep.status, rep.reason, rep.attempts) == ("failed", "move-refused", 3), rep.detail
    assert rep.detail and "0xC000" in rep.detail and "destination" in rep.detail


def test_move_dropped_midway_is_completed_by_requesting_only_the_rest(
        sqlite_db: str, site_keys: SiteKeys, tmp_path: Path,
        start_listener: Callable[..., Listener]) -> None:
    e = fresh_exam(tmp_path / "x", index=500, series_per_view=False)
    listener = _listen(sqlite_db, site_keys, tmp_path, 0, start_listener, "FAKEPACS")
    with fake_pacs(e.files, destination=("127.0.0.1", listener.port),
                   mode="drop-after-2-once") as pacs:
        node = NodeConfig("fake", pacs.ae_title, "127.0.0.1", pacs.port)
        [m] = f.find_studies(node, {"study_instance_uids": [e.study_uid]}, local_ae=GATEWAY_AE,
                             keys=site_keys)
        first = r.retrieve_study(node, m, _ctx(site_keys, sqlite_db), retry=FAST)
        assert (first.status, first.reason, first.retry_in) == ("retry", "pacs-aborted", 0.05)
        rep = r.retrieve_study(node, m, _ctx(site_keys, sqlite_db), attempt=2, retry=FAST)
    assert (rep.status, rep.received, rep.attempts) == ("complete", 4, 2)
    assert pacs.move_requests == [("STUDY", 0), ("IMAGE", 2)]


def test_pacs_that_never_sends_and_study_without_counts(
        sqlite_db: str, site_keys: SiteKeys, tmp_path: Path,
        start_listener: Callable[..., Listener]) -> None:
    e = fresh_exam(tmp_path / "y", index=600, views=3)
    listener = _listen(sqlite_db, site_keys, tmp_path, 0, start_listener, "FAKEPACS")
    with fake_pacs(e.files, destination=("127.0.0.1", listener.port), mode="never-send",
                   study_counts=False) as pacs:
        node = NodeConfig("silent", pacs.ae_title, "127.0.0.1", pacs.port)
        [m] = f.find_studies(node, {"accession_numbers": [e.accession]}, local_ae=GATEWAY_AE,
                             keys=site_keys)
        assert (m.expected, m.count_source) == (3, "series")
        policy = r.RetryPolicy(attempts=2, backoff_s=0.05,
                               timeouts=Timeouts(connect=3, dimse=1.5, network=3, slot=5))
        rep = _until_final(node, m, _ctx(site_keys, sqlite_db), retry=policy)
    assert (rep.status, rep.reason, rep.received, rep.attempts) == (
        "failed", "pacs-timed-out", 0, 2)


def test_per_node_association_limit(orthanc_pacs: OrthancPeer) -> None:
    from service.dicom.scu import PacsError, association

    node = NodeConfig("limited", orthanc_pacs.ae_title, "127.0.0.1", orthanc_pacs.dicom_port,
                      "move", 1)
    t = Timeouts(connect=5, dimse=5, network=5, slot=0.5)
    with association(node, GATEWAY_AE, [(f.FIND, None)], t) as first:
        assert first.is_established
        with pytest.raises(PacsError) as busy, association(node, GATEWAY_AE, [(f.FIND, None)], t):
            pass
        assert busy.value.code == "pacs-busy"
    with association(node, GATEWAY_AE, [(f.FIND, None)], t) as again:  # the slot was released
        assert again.is_established


def test_cancel_of_a_move_the_pacs_does_not_stop_aborts_after_the_grace(
        sqlite_db: str, site_keys: SiteKeys, tmp_path: Path,
        start_listener: Callable[..., Listener]) -> None:
    """A PACS that ignores C-CANCEL (it went silent mid-move) cannot hold the worker: the
    association is aborted ``cancel_grace_s`` after the C-CANCEL and the attempt ends
    ``cancelled`` (not a PACS failure, not retried)."""
    import dataclasses

    e = fresh_exam(tmp_path / "c", index=650, views=2)
    listener = _listen(sqlite_db, site_keys, tmp_path, 0, start_listener, "FAKEPACS")
    with fake_pacs(e.files, destination=("127.0.0.1", listener.port),
                   mode="never-send") as pacs:
        node = NodeConfig("silent", pacs.ae_title, "127.0.0.1", pacs.port)
        asked = time.monotonic() + 1.0
        ctx = dataclasses.replace(_ctx(site_keys, sqlite_db),
                                  should_stop=lambda: time.monotonic() >= asked,
                                  stop_poll_s=0.2, cancel_grace_s=1.0)
        policy = r.RetryPolicy(attempts=3, timeouts=Timeouts(connect=3, dimse=30, network=30))
        m = f.StudyMatch.known(e.study_uid, site_keys, 2)
        rep = r.retrieve_study(node, m, ctx, attempt=1, retry=policy)
        took = time.monotonic() - asked
    assert (rep.status, rep.reason, rep.retry_in) == ("failed", "cancelled", None)
    assert took < 3.0, took  # poll 0.2 + grace 1.0, far below the 30 s DIMSE timeout


def test_filter_keeping_every_series_moves_the_study_once_and_trusts_full_counts(
        orthanc_pacs: OrthancPeer, migrated_db: str, site_keys: SiteKeys, tmp_path: Path,
        gateway_port: int, start_listener: Callable[..., Listener],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Four views in four series, all MG: one study-level C-MOVE (one association back from
    the PACS, not four), and no instance-level listing once all four counted instances are
    here (a pull that falls short still gets it: test_move_dropped_midway_...)."""
    _listen(migrated_db, site_keys, tmp_path, gateway_port, start_listener)
    exam = fresh_exam(tmp_path / "a", index=210, study_date="20250402")
    assert len(exam.series_uids) == 4
    orthanc_pacs.upload(*exam.files)
    node = _node(orthanc_pacs)
    [st] = f.find_studies(node, {"accession_numbers": [exam.accession]}, local_ae=GATEWAY_AE,
                          keys=site_keys)
    plans: list[Any] = []
    listings: list[Any] = []
    real_pull, real_missing = r._pull, r._missing_plan
    monkeypatch.setattr(r, "_pull", lambda node, uid, plan, **kw: (
        plans.append(plan), real_pull(node, uid, plan, **kw))[1])
    monkeypatch.setattr(r, "_missing_plan", lambda *a, **kw: (
        listings.append(1), real_missing(*a, **kw))[1])
    keep_mg = f.SeriesFilter(modalities=frozenset({"MG"}), source="test")
    rep = _until_final(node, st, _ctx(site_keys, migrated_db), series_filter=keep_mg)
    assert (rep.status, rep.expected, rep.received, rep.skipped) == ("complete", 4, 4, [])
    assert plans == [None] and listings == []
