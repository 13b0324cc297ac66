"""The one-command modes as a user runs them: `deidgate demo --exit-when-done` on an empty data
folder, and `deidgate serve` stopping cleanly on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.peers.net import free_port, wait_port

pytestmark = pytest.mark.integration
CLI = [sys.executable, "-m", "service.cli.main"]


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEIDGATE_")}
    env.update(DEIDGATE_HOME=str(home), **extra)
    return env


def test_demo_ends_with_a_ranked_worklist(tmp_path: Path) -> None:
    """Scoring in the demo, with a tiny model configured (the demo model's first training takes
    minutes: tests/score/test_demo_model.py trains it): every exam scored by the worker, an SR
    each, and the worklist ranked by score."""
    from tests.score.conftest import make_tiny_model

    make_tiny_model(tmp_path / "model")
    home = tmp_path / "data"
    env = _env(home, DEIDGATE_API_PORT=str(free_port()), DEIDGATE_DICOM_PORT=str(free_port()),
               DEIDGATE_DICOM_HOST="127.0.0.1", DEIDGATE_SCORE_MODEL=str(tmp_path / "model"))
    res = subprocess.run([*CLI, "demo", "--exams", "2", "--exit-when-done", "--timeout", "200"],
                         env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    out = res.stdout
    assert "done: studies 2/2 complete, 2 scored; instances 8/8 done" in out + res.stderr
    assert "scoring      tiny 1 (configured)" in out
    assert "worklist     ranked by tiny 1" in out
    ranked = re.findall(
        r"^ +(\d) +(\d\.\d{3}) +(likely-normal|standard|priority) +4 +(2\.25\.\d+)$", out, re.M)
    assert [r[0] for r in ranked] == ["1", "2"]
    assert float(ranked[0][1]) >= float(ranked[1][1])
    srs = [p for p in (home / "output").rglob("*.dcm")
           if p.read_bytes()[128:132] == b"DICM" and b"1.2.840.10008.5.1.4.1.1.88.33" in
           p.read_bytes()[:2000]]
    assert len(srs) == 2


def test_demo_on_a_fresh_data_folder(tmp_path: Path) -> None:
    home = tmp_path / "data"
    env = _env(home, DEIDGATE_API_PORT=str(free_port()), DEIDGATE_DICOM_PORT=str(free_port()),
               DEIDGATE_DICOM_HOST="127.0.0.1")
    res = subprocess.run([*CLI, "demo", "--exams", "2", "--exit-when-done", "--timeout", "120",
                          "--no-score"],  # scoring: test_demo_ends_with_a_ranked_worklist
                         env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    out = res.stdout
    assert "done: studies 2/2 complete; instances 8/8 done" in out + res.stderr
    assert re.search(r"API +http://127\.0\.0\.1:\d+/api/v1", out)
    assert re.search(r"staff token +dgt_", out)
    # the web UI's URL and one generated password per role, which really signs in
    assert re.search(r"web UI +http://127\.0\.0\.1:\d+/ ", out)
    logins = re.findall(r"^  (\w+) +user (\S+) +password (\S+)$", out, re.M)
    assert {r for r, _, _ in logins} == {"staff", "admin", "auditor", "service"}
    from service.db.session import session_scope
    from service.web.accounts import check_credentials

    with session_scope(f"sqlite:///{home / 'deidgate.db'}") as s:
        for role, name, password in logins:
            user, _ = check_credentials(s, name, password)
            assert user is not None and user.role == role
    outputs = list((home / "output").rglob("*.dcm"))
    assert len(outputs) == 8
    assert not [p for p in (home / "spool").iterdir() if p.is_file()]
    # the synthetic women's names never reach the output or the console
    from synthetic.identity import default_identity

    for n in range(2):
        ident = default_identity(n)
        assert ident.patient_id not in out + res.stderr
        for p in outputs:
            assert ident.patient_id.encode() not in p.read_bytes()


def test_serve_starts_everything_and_stops_on_sigterm(tmp_path: Path) -> None:
    api_port, dicom_port, health_port = free_port(), free_port(), free_port()
    env = _env(tmp_path / "data", DEIDGATE_API_PORT=str(api_port),
               DEIDGATE_DICOM_PORT=str(dicom_port), DEIDGATE_DICOM_HOST="127.0.0.1",
               DEIDGATE_API_HEALTH_PORT=str(health_port))
    proc = subprocess.Popen([*CLI, "serve", "--concurrency", "1"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        wait_port(api_port, timeout=60)
        wait_port(dicom_port, timeout=30)
        # production default: HTTPS under the certificate `serve` generated for this host
        ca = ssl.create_default_context(
            cafile=str(tmp_path / "data" / "tls" / "self-signed.crt"))
        r = httpx.get(f"https://127.0.0.1:{api_port}/api/v1/jobs", timeout=10, verify=ca)
        assert r.status_code == 401  # the API is up and refuses the unauthenticated
        time.sleep(2)  # let the worker finish starting
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-3000:]
    assert "stopped" in text
    # nothing left listening, no worker left behind
    for port in (api_port, dicom_port, health_port):
        with pytest.raises(OSError):
            wait_port(port, timeout=0.5)
    assert _processes_with_home(tmp_path / "data") == []


def _processes_with_home(home: Path) -> list[int]:
    """Processes (a worker and its pool children) whose environment names this data folder."""
    needle = f"DEIDGATE_HOME={home}".encode()
    found = []
    for env in Path("/proc").glob("[0-9]*/environ"):
        try:
            if needle in env.read_bytes().split(b"\0"):
                found.append(int(env.parent.name))
        except OSError:
            continue
    return found
