"""Observability of the real processes: ``/metrics`` of the real app scraped over uvicorn and
parsed with prometheus-client's parser (samples written by another process through the real
pipeline and listener code), ``/api/v1/ready`` with each check failing in turn, JSON logs from
a real entry point, and ``deidgate serve``'s HTTPS default with its loopback health port."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from service.api.app import create_app
from service.core.config import Settings
from service.core.health import model_status_path, write_model_status
from service.db.migrate import upgrade
from tests.peers.net import free_port, uvicorn_in_thread, wait_port

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]

WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from service.audit.process import start_process
    from service.core import metrics
    from service.core.config import Settings
    from service.core.keys import SiteKeys
    from synthetic.exam import fresh_exam
    from workers.deid.engine import Deidentifier
    from workers.deid.pipeline import process_instance
    from workers.deid.policy import load_policy

    home = Path(sys.argv[1])
    settings = Settings(home=home, node_name="gw1")
    start_process(settings, "test-writer")
    keys = SiteKeys.for_settings(settings)
    engine = Deidentifier(load_policy("mammography-screening"), keys, project="default")
    exam = fresh_exam(home / "in", index=3, views=2)
    junk = home / "in" / "junk.dcm"
    junk.write_bytes(b"not dicom at all")
    for f in [*exam.files, junk]:
        r = process_instance(f, deidentifier=engine, db_url=settings.db_url, keys=keys,
                             out_root=settings.output_dir, quarantine=settings.quarantine_dir,
                             source="test", job_id=None, delete_source=False)
        print(r.status, r.reason_code)
    metrics.count_received(2)
    metrics.count_failed("retrieve", "pacs-busy")
    metrics.observe_inference(0.3, "cuda")
    metrics.count_score("priority", 0.93)
    metrics.count_score("Nordmann^Kari", 0.5)  # PHI where a category belongs: "other"
    print(exam.patient_id, exam.accession, exam.study_uid)
""")


@contextmanager
def uvicorn_app(app: object) -> Iterator[int]:
    config = uvicorn.Config(app, host="127.0.0.1", port=free_port(),  # type: ignore[arg-type]
                            log_level="warning", lifespan="off")
    with uvicorn_in_thread(config) as port:
        yield port


def test_metrics_scrape_of_the_real_app(tmp_path: Path) -> None:
    home = tmp_path / "home"
    settings = Settings(home=home, node_name="gw1", environment="development")
    settings.ensure_dirs()
    upgrade(settings.db_url)
    out = subprocess.run([sys.executable, "-c", WRITER, str(home)], cwd=REPO, timeout=300,
                         capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[:3] == ["written None", "written None", "refused not-dicom"]
    phi = out[3].split()
    with uvicorn_app(create_app(settings)) as port:
        resp = httpx.get(f"http://127.0.0.1:{port}/metrics/", timeout=10)
    assert resp.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(resp.text)}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in families.values() for s in f.samples}
    assert samples[("deidgate_instances_deidentified_total", (("node", "gw1"),))] == 2
    assert samples[("deidgate_instances_received_total", (("node", "gw1"),))] == 2
    assert samples[("deidgate_instances_refused_total",
                    (("reason", "not-dicom"), ("stage", "deidentify")))] == 1
    assert samples[("deidgate_instances_failed_total",
                    (("reason", "pacs-busy"), ("stage", "retrieve")))] == 1
    assert samples[("deidgate_stage_duration_seconds_count", (("stage", "deidentify"),))] == 3
    assert samples[("deidgate_model_inference_seconds_count", (("device", "cuda"),))] == 1
    assert samples[("deidgate_score_count", (("category", "priority"),))] == 1
    assert samples[("deidgate_score_count", (("category", "other"),))] == 1
    assert samples[("deidgate_broker_up", ())] == 1  # the filesystem broker answered
    depths = {dict(k[1])["queue"] + "." + dict(k[1])["node"]
              for k in samples if k[0] == "deidgate_queue_depth"}
    assert {"deid.gw1", "default.", "score."} <= depths
    for value in phi:  # no PHI anywhere in the scrape
        assert value not in resp.text


def _ready(settings: Settings) -> tuple[int, dict[str, dict[str, object]]]:
    with TestClient(create_app(settings), base_url="https://testserver") as c:
        r = c.get("/api/v1/ready")
    return r.status_code, {ch["name"]: ch for ch in r.json()["checks"]}


def test_readiness_checks_each_dependency(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "h")
    settings.ensure_dirs()
    status, checks = _ready(settings)  # nothing migrated yet
    assert status == 503 and checks["database"]["code"] == "not-migrated"
    upgrade(settings.db_url)
    status, checks = _ready(settings)
    assert status == 200 and {c["code"] for c in checks.values()} <= {"ok", "not-configured"}
    assert checks["broker"]["code"] == "ok" and checks["spool"]["code"] == "ok"

    settings.spool_free_floor_mb = 1 << 40  # more than any disk: below the floor
    status, checks = _ready(settings)
    assert status == 503 and checks["spool"]["code"] == "low-space"
    settings.spool_free_floor_mb = 0

    settings.broker_url = f"redis://127.0.0.1:{free_port()}/0"  # nobody listens there
    status, checks = _ready(settings)
    assert status == 503 and checks["broker"]["code"] == "unreachable"
    settings.broker_url = None

    settings.ready_requires_model = True
    status, checks = _ready(settings)
    assert status == 503 and checks["model"]["code"] == "missing"
    write_model_status(model_status_path(settings), state="loaded", model="demo",
                       version="1", sha256="ab" * 32, device="cpu")
    status, checks = _ready(settings)
    assert status == 200 and checks["model"]["code"] == "ok"


def _cli_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEIDGATE_")}
    env.update({"DEIDGATE_HOME": str(home), "PYTHONPATH": str(REPO), **extra})
    return env


def test_json_logs_from_the_listener_entry_point(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli.main", "listen", "--port", str(port), "--no-queue"],
        env=_cli_env(tmp_path / "h", DEIDGATE_LOG_FORMAT="json",
                     DEIDGATE_LISTENER_PROCESSES="1"),
        cwd=REPO, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        wait_port(port, timeout=60)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any(e["logger"] == "service.audit.process" and e["level"] == "info"
               and "listener process started" in e["message"] for e in events), err
    assert all({"ts", "level", "logger", "message", "pid"} <= set(e) for e in events)


def test_serve_defaults_to_https_with_a_plain_loopback_health_port(tmp_path: Path) -> None:
    api_port, health_port = free_port(), free_port()
    home = tmp_path / "h"
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli.main", "serve", "--no-listener", "--no-worker"],
        env=_cli_env(home, DEIDGATE_API_PORT=str(api_port),
                     DEIDGATE_API_HEALTH_PORT=str(health_port)),
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_port(api_port, timeout=90)
        wait_port(health_port, timeout=30)
        cert = home / "tls" / "self-signed.crt"
        assert (home / "tls" / "self-signed.key").stat().st_mode & 0o077 == 0
        ctx = ssl.create_default_context(cafile=str(cert))  # it names localhost
        with httpx.Client(verify=ctx) as c:
            r = c.get(f"https://localhost:{api_port}/api/v1/health")
        assert r.status_code == 200 and r.headers["strict-transport-security"].startswith(
            "max-age=")
        with pytest.raises(httpx.HTTPError):  # the API port speaks TLS only
            httpx.get(f"http://127.0.0.1:{api_port}/api/v1/health", timeout=5)
        plain = httpx.get(f"http://127.0.0.1:{health_port}/api/v1/health", timeout=10)
        assert plain.status_code == 200 and "strict-transport-security" not in plain.headers
        other = httpx.get(f"http://127.0.0.1:{health_port}/api/v1/jobs", timeout=10)
        assert other.status_code == 403 and other.json()["error"]["code"] == "https-required"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert f"https://127.0.0.1:{api_port}" in out
