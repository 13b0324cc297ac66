"""What the schemathesis run needs: a database holding real jobs, a token per role, and the
app running under uvicorn in its own process (``python -m tests.api.fuzz_support``).

The data go in through the same service functions the gateway uses (``submit_job``, the DICOM
admin operations, the audit store, ``create_token``). Only the states a worker would reach
later (studies found, instances written or failed, tasks dead-lettered) are written as rows,
because reaching them for real needs a PACS, a listener and workers, none of which the API
under test touches.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from pydicom import Dataset

from service.audit.store import AuditStore
from service.audit.types import Mapping
from service.core.config import Settings
from service.core.keys import SiteKeys
from service.core.security import Role, create_token
from service.db.models.dicom import ReceivedInstance
from service.db.models.jobs import DeadLetter, Job, JobInstance, JobStudy
from service.db.models.triage import TriageEntry
from service.db.session import session_scope
from service.db.states import DeadLetterState, InstanceState, JobState, StudyState
from service.dicom import admin
from service.jobs.ops import JobRequest, submit_job
from workers.deid.outcome import DeidOutcome

T0 = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
POLICY = "dicom-basic-profile"  # shipped in policies/


def _job(session, settings, keys, n: int) -> str:  # type: ignore[no-untyped-def]
    req = JobRequest(pacs="pacs1", policy=POLICY, accession_numbers=[f"A2026{n:07d}"])
    return submit_job(session, settings, keys, req, actor="token:seed").id


def _study(session, job_id: str, idx: int, state: StudyState, expected: int) -> JobStudy:  # type: ignore[no-untyped-def]
    study = JobStudy(job_id=job_id, idx=idx, study_key=f"k{job_id[:8]}{idx}", uid_sealed=b"x",
                     pseudo_uid=f"2.25.{900 + idx}", state=state, expected=expected)
    session.add(study)
    session.flush()
    return study


def _instance(session, study: JobStudy, n: int, state: InstanceState) -> None:  # type: ignore[no-untyped-def]
    """A received file (the listener's row) and its way through de-identification."""
    received = ReceivedInstance(
        sop_key=f"sop-{study.job_id[:8]}-{study.idx}-{n}", series_key="series",
        study_key=study.study_key, sop_class_uid="1.2.840.10008.5.1.4.1.1.1.2",
        transfer_syntax="1.2.840.10008.1.2.1", spool_path=f"/spool/{study.id}-{n}.dcm",
        node="node-a", calling_ae="ORTHANC", size_bytes=1024, job_id=study.job_id,
    )
    session.add(received)
    session.flush()
    session.add(JobInstance(received_id=received.id, job_id=study.job_id, study_id=study.id,
                            spool_path=received.spool_path, node="node-a", state=state,
                            reason=None if state == InstanceState.WRITTEN else "seeded"))


def seed(settings: Settings) -> dict[Role, str]:
    """Jobs queued, failed (studies, instances, dead letters), done and cancelled; a triage
    worklist; audit mappings and events; one token per role (returned)."""
    keys = SiteKeys.for_settings(settings)
    with session_scope(settings.db_url) as s:
        admin.add_node(s, "pacs1", ae_title="ORTHANC", host="127.0.0.1", port=4242)
        admin.allow(s, "MODALITY1", "127.0.0.1")
        s.commit()
        queued = _job(s, settings, keys, 1)
        failed, done, cancelled = (_job(s, settings, keys, n) for n in (2, 3, 4))
        del queued

        bad = _study(s, failed, 0, StudyState.FAILED, 4)
        bad.reason = "C-MOVE failed (0xC000)"
        good = _study(s, failed, 1, StudyState.COMPLETE, 2)
        for n in range(2):
            _instance(s, good, n, InstanceState.WRITTEN)
        for n, state in enumerate(
            [InstanceState.FAILED, InstanceState.DEAD_LETTERED, InstanceState.REFUSED]
        ):
            _instance(s, bad, n, state)
        s.add(DeadLetter(task="deidgate.deidentify_instance", target="3", job_id=failed,
                         reason="spool-missing", attempts=5, state=DeadLetterState.DEAD))
        s.add(DeadLetter(task="deidgate.retrieve_study", target=str(bad.id), job_id=failed,
                         reason="pacs-unreachable", attempts=5, state=DeadLetterState.RETRIED,
                         retried_at=T0))
        s.query(Job).filter(Job.id == failed).update(
            {"state": JobState.FAILED, "reason": "1 study failed", "finished_at": T0})

        _instance(s, _study(s, done, 0, StudyState.COMPLETE, 1), 0, InstanceState.WRITTEN)
        s.query(Job).filter(Job.id == done).update({"state": JobState.DONE, "finished_at": T0})
        s.query(Job).filter(Job.id == cancelled).update(
            {"state": JobState.CANCELLED, "reason": "cancelled by token:seed", "finished_at": T0})

        for i, (score, category) in enumerate(
            [(0.91, "priority"), (0.55, "standard"), (0.12, "likely-normal")]
        ):
            s.add(TriageEntry(exam=f"2.25.{100 + i}", patient_pseudonym=f"PSN-{i}", score=score,
                              category=category, model_version="mgtriage-0.1",
                              scored_at=T0 + timedelta(minutes=i)))
        outcome = DeidOutcome(
            dataset=Dataset(), sop_class_uid="1.2.840.10008.5.1.4.1.1.1.2",
            sop_instance_uid="2.25.903", study_instance_uid="2.25.901",
            series_instance_uid="2.25.902", patient_pseudonym="PSN-0",
            mappings=[Mapping("patient", "SEED^PATIENT", "PSN-0"),
                      Mapping("study", "1.2.3.4", "2.25.901")],
            policy_name=POLICY, policy_version="1",
        )
        store = AuditStore(s, keys)
        store.record_outcome(outcome, source="seed", job_id=done)
        s.commit()
        store.lookup("PSN-0", reason="seeded ticket 42", actor="token:seed")
        tokens = {role: create_token(s, role=role, name=f"fuzz-{role.value}").token
                  for role in Role}
    return tokens


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def running_app(home: Path, db_url: str, log: Path) -> Iterator[str]:
    """The app under uvicorn in a child process; yields its base URL, stops it afterwards."""
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.api.fuzz_support", "--home", str(home),
             "--db", db_url, "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"the app exited ({proc.returncode}); see {log}")
                try:
                    if httpx.get(f"{base}/api/v1/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the app did not start within 60 s; see {log}")
                time.sleep(0.2)
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def main() -> None:
    import uvicorn

    from service.api.app import create_app

    p = argparse.ArgumentParser(description="the API alone, for the schemathesis test")
    p.add_argument("--home", type=Path, required=True)
    p.add_argument("--db", required=True)
    p.add_argument("--port", type=int, required=True)
    a = p.parse_args()
    settings = Settings(home=a.home, database_url=a.db)
    uvicorn.run(create_app(settings), host="127.0.0.1", port=a.port, log_level="warning",
                access_log=False)


if __name__ == "__main__":
    main()
