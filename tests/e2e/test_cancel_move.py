"""Cancel stops a C-MOVE already running (issue 7, section 7), against real Orthanc: a study of
many instances is being moved when the operator cancels the job; the retrieval worker notices
(it polls the job's state beside the move), sends C-CANCEL, and the PACS stops sending within
seconds. Before, the move ran to its end: every instance arrived after the cancel."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid
from sqlalchemy import func, select

from service.db.models.dicom import ReceivedInstance
from service.db.session import get_sessionmaker
from service.jobs import ops
from synthetic.exam import fresh_exam
from tests.e2e.harness import gateway, make_settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

N = 600  # instances in the study: a move that takes far longer than the cancel may


def _big_study(folder: Path) -> tuple[str, list[Path]]:
    exam = fresh_exam(folder / "exam", index=77, rows=256, cols=200, views=1)
    ds = dcmread(exam.files[0])
    out = []
    for i in range(N):
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = i + 1
        p = folder / f"i{i:04d}.dcm"
        ds.save_as(p, enforce_file_format=True)
        out.append(p)
    return exam.accession, out


def _arrivals(db_url: str) -> tuple[int, object]:
    with get_sessionmaker(db_url)() as s:
        n, last = s.execute(select(func.count(), func.max(ReceivedInstance.received_at))).one()
    return int(n), last


def test_cancel_stops_a_running_move_within_seconds(tmp_path: Path) -> None:
    st = make_settings(tmp_path, db_url=f"sqlite:///{tmp_path / 'deidgate.db'}")
    accession, files = _big_study(tmp_path / "big")
    with gateway(tmp_path, st, n_exams=0) as gw:
        gw.orthanc.upload(*files)
        job_id = gw.submit([accession])
        gw.wait(job_id, until=lambda j: j["counts"]["instances_received"] >= 30, timeout=240)
        with get_sessionmaker(gw.db_url)() as s:
            t0 = time.time()
            view = ops.cancel_job(s, job_id, actor="test")
        assert view.state == "cancelled"
        n_at_cancel, _ = _arrivals(gw.db_url)
        # arrivals stop: wait until nothing new for 5 s (or give up at 60 s)
        n, quiet_since = n_at_cancel, time.monotonic()
        deadline = time.monotonic() + 60
        while time.monotonic() - quiet_since < 5 and time.monotonic() < deadline:
            time.sleep(0.2)
            now, _ = _arrivals(gw.db_url)
            if now != n:
                n, quiet_since = now, time.monotonic()
        n_final, last = _arrivals(gw.db_url)
        assert last is not None
        latency = max(0.0, last.timestamp() - t0)  # type: ignore[attr-defined]
        figure = {"instances": N, "received_at_cancel": n_at_cancel, "received_final": n_final,
                  "after_cancel": n_final - n_at_cancel,
                  "cancel_to_last_arrival_s": round(latency, 2)}
        print(json.dumps(figure))
        out = Path(__file__).resolve().parents[2] / "test-output"
        out.mkdir(exist_ok=True)
        with (out / "cancel_latency.jsonl").open("a") as f:
            f.write(json.dumps(figure) + "\n")
        assert n_final < N, "the move ran to its end after the cancel"
        assert latency < 5.0, figure
        log = (tmp_path / "worker.log").read_text(errors="replace")
        assert "sending C-CANCEL" in log
