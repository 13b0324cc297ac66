"""No PHI in any log (issue 7 section 6): a dataset whose malformed elements carry a planted name
(a Specific Character Set pydicom does not know, an Age String that is not one, the name also in
the patient's name) is sent by dcmtk's storescu to a running `deidgate serve` (API, listener
processes, Celery workers), and given to `deidgate deidentify`. pydicom complains about both
elements, quoting them; every line every process wrote is searched for the name."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import select

from service.core.config import Settings
from service.db.migrate import upgrade
from service.db.models.dicom import ReceivedInstance
from service.db.session import get_sessionmaker, session_scope
from service.dicom import admin
from synthetic.exam import fresh_exam
from tests.peers.dcmtk import storescu
from tests.peers.net import free_port, stop_process, wait_port

pytestmark = pytest.mark.integration
CLI = [sys.executable, "-m", "service.cli.main"]
PLANTED = "ZYXPLANTEDNAME"


def _planted(tmp: Path) -> Path:
    exam = fresh_exam(tmp / "exam", index=0)
    ds = dcmread(exam.files[0])
    ds.PatientName = f"{PLANTED.title()}^Anna"
    with warnings.catch_warnings():  # written malformed on purpose
        warnings.simplefilter("ignore")
        ds.SpecificCharacterSet = PLANTED  # not a character set: pydicom warns, quoting it
        ds.add_new(0x00101010, "AS", PLANTED)  # Patient's Age must be nnnD/W/M/Y
        path = tmp / "planted.dcm"
        ds.save_as(path, enforce_file_format=True)
    assert PLANTED.encode() in path.read_bytes()
    return path


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEIDGATE_")}
    env.update(DEIDGATE_HOME=str(home), DEIDGATE_ENVIRONMENT="development", **extra)
    return env


def test_planted_name_reaches_no_log(tmp_path: Path) -> None:
    planted = _planted(tmp_path)
    home = tmp_path / "data"
    api_port, dicom_port = free_port(), free_port()
    st = Settings(home=home, dicom_host="127.0.0.1", dicom_port=dicom_port, api_port=api_port,
                  environment="development")
    st.ensure_dirs()
    upgrade(st.db_url)
    with session_scope(st.db_url) as s:
        admin.seed(s, st)
        admin.set_local_ae(s, st, ae_title="DEIDGATE", host="127.0.0.1", port=dicom_port)
        admin.allow(s, "STORESCU")
    env = _env(home, DEIDGATE_API_PORT=str(api_port), DEIDGATE_DICOM_PORT=str(dicom_port),
               DEIDGATE_DICOM_HOST="127.0.0.1")
    serve_log = tmp_path / "serve.log"
    with serve_log.open("wb") as out:
        proc = subprocess.Popen([*CLI, "serve", "--concurrency", "1"], env=env, stdout=out,
                                stderr=subprocess.STDOUT, cwd=tmp_path)
        try:
            wait_port(api_port, timeout=60)
            wait_port(dicom_port, timeout=30)
            r = storescu(dicom_port, [planted])
            assert r.returncode == 0, r.stdout + r.stderr
            deadline = time.monotonic() + 90
            while True:  # de-identified or refused by the worker
                with get_sessionmaker(st.db_url)() as s:
                    status = s.scalar(select(ReceivedInstance.status))
                if status in ("done", "refused"):
                    break
                assert time.monotonic() < deadline, f"instance still {status}"
                time.sleep(0.3)
            time.sleep(1)  # the worker's last lines
        finally:
            stop_process(proc, timeout=90)
    cli = subprocess.run([*CLI, "deidentify", str(planted), "--out", str(tmp_path / "cli-out"),
                          "--report", str(tmp_path / "report.json")],
                         env=_env(tmp_path / "cli-home"), capture_output=True, text=True,
                         timeout=180, cwd=tmp_path)
    served = serve_log.read_text(errors="replace")
    logs = {"serve (API, listener, workers)": served, "deidentify": cli.stdout + cli.stderr}
    assert "celery@" in served or "deidgate-deid" in served, served[-3000:]  # workers logged
    assert "withheld" in served + cli.stderr, (served[-3000:], cli.stderr[-3000:])  # pydicom did
    for name, text in logs.items():  # complain, about the planted elements, without them
        for needle in (PLANTED, PLANTED.title()):
            assert needle not in text, f"{needle!r} in the {name} log:\n" + "\n".join(
                line for line in text.splitlines() if needle in line)[:3000]
