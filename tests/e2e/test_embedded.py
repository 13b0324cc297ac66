"""End to end on the embedded mode (SQLite + the filesystem broker): Orthanc -> job through REST
-> de-identified output + mapping rows + audit chain intact; listener restarted mid-move;
cancellation mid-job; dead-letter and retry through the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from pydicom import dcmread

from service.audit.store import AuditStore
from service.db.session import get_sessionmaker
from tests.e2e.harness import gateway, make_settings

pytestmark = pytest.mark.integration


def _sqlite(tmp: Path) -> str:
    return f"sqlite:///{tmp / 'deidgate.db'}"


def check_output(gw, job: dict, n_instances: int) -> None:  # type: ignore[no-untyped-def]
    """Every instance once, de-identified, under pseudonymous names; mappings and chain intact;
    no identified copy left in the spool."""
    outs = gw.outputs()
    assert len(outs) == n_instances
    originals = {e.patient_id for e in gw.exams} | {e.accession for e in gw.exams}
    study_uids = {e.study_uid for e in gw.exams}
    family_names = {e.patient_name.split("^")[0] for e in gw.exams}
    for p in outs:
        ds = dcmread(p)
        assert ds.PatientID not in originals and ds.StudyInstanceUID not in study_uids
        raw = p.read_bytes()
        for value in originals | study_uids | family_names:
            assert value.encode() not in raw
        assert not any(v in str(p) for v in originals | study_uids)
    assert {s["study_uid"] for s in job["studies"]} == {p.parent.parent.name for p in outs}
    assert gw.spool_files() == []
    with get_sessionmaker(gw.db_url)() as s:
        store = AuditStore(s, gw.keys)
        inst = list(store.export_mapping("instance"))
        assert len(inst) == n_instances
        assert {new for _, new in inst} == {p.stem for p in outs}
        assert {old for old, _ in store.export_mapping("patient")} >= {e.patient_id
                                                                       for e in gw.exams}
        report = store.verify_chain()
        assert report.ok, report.findings


def test_job_through_rest_end_to_end(tmp_path: Path) -> None:
    """... and on to a research PACS (dcmtk storescp) as the job's destination."""
    from service.db.session import session_scope
    from service.dicom import admin
    from tests.peers.net import free_port, stop_process, wait_port

    st = make_settings(tmp_path, db_url=_sqlite(tmp_path))
    research = tmp_path / "research"
    research.mkdir()
    port = free_port()
    scp = subprocess.Popen(["storescp", "-aet", "RESEARCH", "-od", str(research), str(port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        with gateway(tmp_path, st, n_exams=3, concurrency=2) as gw:
            with session_scope(st.db_url) as s:
                admin.add_node(s, "research", ae_title="RESEARCH", host="127.0.0.1", port=port)
            _rest_end_to_end(gw, research)
    finally:
        stop_process(scp)


def _rest_end_to_end(gw, research: Path) -> None:  # type: ignore[no-untyped-def]
    job_id = gw.submit(destination="research")
    job = gw.wait(job_id)
    assert job["state"] == "done", job
    c = job["counts"]
    assert (c["studies_found"], c["studies_complete"], c["instances_expected"],
            c["instances_received"], c["instances_deidentified"]) == (3, 3, 12, 12, 12)
    api_view = gw.job(job_id)
    assert api_view["state"] == "done" and api_view["counts"] == c
    for e in gw.exams:  # PHI nowhere in what the API returns
        assert e.accession not in str(api_view) and e.patient_id not in str(api_view)
    check_output(gw, job, 12)
    job = gw.wait(job_id, until=lambda j: all(s["forwarded"] for s in j["studies"]))
    sent = sorted(research.iterdir())
    assert len(sent) == 12
    assert {dcmread(p).SOPInstanceUID for p in sent} == {p.stem for p in gw.outputs()}


def test_listener_restarted_mid_move(tmp_path: Path) -> None:
    """The listener goes away after the first instance of the move and comes back: the
    retrieval notices the missing instances, asks again, and the job completes."""
    from service.dicom.listener import Listener
    from service.jobs.on_stored import make_on_stored

    st = make_settings(tmp_path, db_url=_sqlite(tmp_path))
    with gateway(tmp_path, st, n_exams=2, listener=False) as gw:
        hook = make_on_stored(st)
        stopped, restarted = threading.Event(), threading.Event()
        holder: dict[str, Listener] = {}
        calls = []

        def restart() -> None:
            holder["l"].stop()  # aborts the associations the moves are using
            stopped.set()
            time.sleep(1.0)
            holder["l"].start()
            restarted.set()

        def on_stored(rid: int) -> None:
            hook(rid)
            calls.append(rid)
            if len(calls) == 1:  # hold this association until the listener is gone
                threading.Thread(target=restart, daemon=True).start()
                stopped.wait(10)

        holder["l"] = Listener.from_settings(st, db_url=st.db_url, keys=gw.keys,
                                             on_stored=on_stored).start()
        try:
            job_id = gw.submit()
            job = gw.wait(job_id, timeout=120)
            assert restarted.is_set()
            assert job["state"] == "done", job
            check_output(gw, job, 8)
        finally:
            holder["l"].stop()


def test_cancel_mid_job_leaves_nothing_identified(tmp_path: Path) -> None:
    st = make_settings(tmp_path, db_url=_sqlite(tmp_path))
    with gateway(tmp_path, st, n_exams=8) as gw:  # more studies than retrieval slots (2)
        job_id = gw.submit()
        gw.wait(job_id, until=lambda j: j["counts"]["instances_received"] >= 1)
        r = gw.api("POST", f"/jobs/{job_id}/cancel")
        assert r.status_code == 200 and r.json()["state"] == "cancelled"
        assert gw.api("POST", f"/jobs/{job_id}/cancel").status_code == 409
        time.sleep(4)  # give the worker every chance to go on (it must not)
        job = gw.wait(job_id, until=lambda j: sum(
            j["counts"][k] for k in ("instances_deidentified", "instances_refused",
                                     "instances_failed")) == j["counts"]["instances_received"])
        assert job["state"] == "cancelled"
        c = job["counts"]
        assert c["instances_received"] < 32  # retrieval stopped
        assert any(s["state"] == "cancelled" for s in job["studies"])
        assert len(gw.outputs()) == c["instances_deidentified"]  # what came was de-identified
        assert gw.spool_files() == []
        assert gw.instance_states().get("pending", 0) == 0


def test_dead_letter_then_retry_from_the_cli(tmp_path: Path) -> None:
    """The output store is unusable (a file where its folder should be): every de-identification
    fails, retries with backoff, is dead-lettered with its reason and the job fails; the CLI's
    --wait exits non-zero with the reason. Fixed, `deidgate job retry` finishes the job."""
    st = make_settings(tmp_path, db_url=_sqlite(tmp_path))
    with gateway(tmp_path, st, n_exams=1) as gw:
        os.rmdir(st.output_dir)
        st.output_dir.write_text("not a folder")
        env = {k: v for k, v in os.environ.items() if not k.startswith("DEIDGATE_")}
        from service.cli.serve import settings_env

        env.update(settings_env(st))
        cli = [sys.executable, "-m", "service.cli.main"]
        sub = subprocess.run([*cli, "job", "submit", "--pacs", "orthanc", "--accession",
                              gw.exams[0].accession, "--wait", "--timeout", "90"],
                             env=env, capture_output=True, text=True, timeout=120)
        assert sub.returncode == 1, sub.stderr
        job_id = sub.stdout.strip().splitlines()[0]
        assert "failed: 1 of 1 studies failed" in sub.stderr
        assert gw.exams[0].accession not in sub.stdout + sub.stderr
        dl = gw.api("GET", f"/jobs/{job_id}/dead-letters").json()
        assert len(dl) == 4, dl  # one per instance, each with its (PHI-free) reason
        assert {d["reason"] for d in dl} == {"internal: NotADirectoryError"}, dl
        assert all(d["attempts"] == st.task_max_retries + 1 for d in dl)
        assert gw.spool_files() != []  # identified copies kept, not lost, while it failed
        st.output_dir.unlink()
        st.output_dir.mkdir()
        ret = subprocess.run([*cli, "job", "retry", job_id, "--wait"], env=env,
                             capture_output=True, text=True, timeout=120)
        assert ret.returncode == 0, ret.stderr
        job = gw.job(job_id)
        assert job["state"] == "done" and job["counts"]["dead_letters"] == 0
        check_output(gw, job, 4)
