"""Metrics: several real processes (one forking like Celery's prefork pool) write, the API
process merges and serves /metrics, httpx scrapes it over a real uvicorn, and prometheus-client's
own parser reads it back. Labels outside their vocabulary never appear."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from kombu import Connection
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from service.core.config import Settings
from service.core.metrics import (
    REASONS,
    Metrics,
    QueueDepths,
    broker_queue_depths,
    metrics_app,
    reason_of,
    reset_dir,
    scrape_registry,
)
from service.dicom.tls import TlsRefusal
from tests.e2e.harness import redis_server
from tests.peers.net import free_port, uvicorn_in_thread

REPO = Path(__file__).resolve().parents[2]

WRITER = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    from service.core.config import Settings
    from service.core.metrics import configure
    m = configure(Settings(home=Path(sys.argv[1])), nodes=["pacs-main"])
    m.instance_received("pacs-main", 3)
    m.instance_deidentified("pacs-main", 2)
    m.instance_refused("deidentify", "pixel-refused")
    m.instance_failed("retrieve", "pacs-busy")
    m.association_refused("tls-unknown-ca")
    with m.time_stage("deidentify"):
        pass
    m.observe_inference(0.2, "cpu")
    m.observe_score("likely_normal", 0.1)
    m.instance_received("Nordmann^Kari")  # PHI where a node name belongs: becomes "other"
    m.audit_drop("queue-full")
    children = []
    for _ in range(2):  # like Celery's prefork pool: children forked after configure()
        pid = os.fork()
        if pid == 0:
            m.instance_received("pacs-main")
            os._exit(0)
        children.append(pid)
    for pid in children:
        os.waitpid(pid, 0)
""")


@contextmanager
def serve(app: object) -> Iterator[int]:
    config = uvicorn.Config(app, host="127.0.0.1", port=free_port(),  # type: ignore[arg-type]
                            log_level="warning", lifespan="off")
    with uvicorn_in_thread(config) as port:
        yield port


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


@pytest.mark.integration
def test_processes_merge_into_one_scrape(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    reset_dir(settings)
    for _ in range(2):  # two separate processes (say the listener and a worker parent)
        subprocess.run([sys.executable, "-c", WRITER, str(tmp_path)], check=True, cwd=REPO,
                       timeout=120)
    registry = scrape_registry(settings, collectors=[
        QueueDepths(lambda: {"default": 4, "deid.gw1": 7, "Nordmann^Kari": 1})])
    with serve(metrics_app(registry)) as port:
        resp = httpx.get(f"http://127.0.0.1:{port}/", timeout=10)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    s = _samples(resp.text)
    assert s[("deidgate_instances_received_total", (("node", "pacs-main"),))] == 2 * (3 + 2)
    assert s[("deidgate_instances_received_total", (("node", "other"),))] == 2
    assert s[("deidgate_instances_deidentified_total", (("node", "pacs-main"),))] == 4
    assert s[("deidgate_instances_refused_total",
              (("reason", "pixel-refused"), ("stage", "deidentify")))] == 2
    assert s[("deidgate_instances_failed_total",
              (("reason", "pacs-busy"), ("stage", "retrieve")))] == 2
    assert s[("deidgate_associations_refused_total", (("reason", "tls-unknown-ca"),))] == 2
    assert s[("deidgate_stage_duration_seconds_count", (("stage", "deidentify"),))] == 2
    assert s[("deidgate_model_inference_seconds_bucket", (("device", "cpu"), ("le", "0.25")))] == 2
    assert s[("deidgate_score_count", (("category", "likely-normal"),))] == 2
    assert s[("deidgate_audit_messages_dropped_total", (("reason", "queue-full"),))] == 2
    assert s[("deidgate_metric_label_rejected_total",
              (("label", "node"), ("metric", "received")))] == 2
    assert s[("deidgate_broker_up", ())] == 1
    assert s[("deidgate_queue_depth", (("node", ""), ("queue", "default")))] == 4
    assert s[("deidgate_queue_depth", (("node", "gw1"), ("queue", "deid")))] == 7
    assert s[("deidgate_queue_depth", (("node", ""), ("queue", "other")))] == 1
    assert "Nordmann" not in resp.text and "Kari" not in resp.text
    # a restart starts from zero
    reset_dir(settings)
    assert "deidgate_instances_received_total" not in generate_latest(
        scrape_registry(settings)).decode()


PHI = ["Nordmann^Kari", "PID0042X", "19650312", "/data/in/Nordmann_Kari.dcm",
       "1.2.826.0.1.3680043.8.498.12345", "could not decode element (0010,0010) 'Kari'"]


def test_no_free_text_can_become_a_label() -> None:
    registry = CollectorRegistry()
    # a declared node name must look like one: "^" is not allowed in node names
    m = Metrics(registry, nodes=["pacs-main", "Nordmann^Kari"])
    for value in PHI:
        m.instance_received(value)
        m.instance_deidentified(value)
        m.instance_refused(value, value)
        m.instance_failed("deidentify", value)
        m.association_refused(value)
        with m.time_stage(value):
            pass
        m.observe_inference(0.1, value)
        m.observe_score(value, 0.5)
        m.audit_drop(value)
    text = generate_latest(registry).decode()
    for value in PHI:
        assert value not in text
        assert value.replace("\\", "\\\\") not in text
    labels = {v for fam in text_string_to_metric_families(text) for s in fam.samples
              for k, v in s.labels.items() if k not in ("le", "metric", "label")}
    assert labels == {"other", "deidentify"}  # the one stage given that is in its vocabulary


def test_known_values_pass() -> None:
    registry = CollectorRegistry()
    m = Metrics(registry, nodes=["pacs-main"])
    m.instance_refused("deidentify", TlsRefusal.expired.value)
    m.observe_score("PRIORITY", 0.9)
    m.observe_inference(0.1, "CUDA")
    text = generate_latest(registry).decode()
    assert 'reason="tls-certificate-expired"' in text
    assert 'category="priority"' in text and 'device="cuda"' in text
    assert "deidgate_metric_label_rejected_total{" not in text  # nothing was refused


def test_reason_of() -> None:
    from service.core.errors import PixelRefused

    assert reason_of(PixelRefused("pixel data at offset 12 is short")) == "pixel-refused"
    assert reason_of(ValueError("Nordmann^Kari")) == "error"


# class attributes (``    code = "x"`` alone on its line) and keywords (``code="x"``)
_CODE = re.compile(r'^\s+code = "([a-z0-9-]+)"$|\bcode="([a-z0-9-]+)"', re.MULTILINE)


def test_reason_vocabulary_covers_every_code_in_the_source() -> None:
    """A new error code must be added to REASONS on purpose (else it is counted as other)."""
    found = set()
    for folder in ("service", "workers"):
        for path in (REPO / folder).rglob("*.py"):
            for attr, keyword in _CODE.findall(path.read_text(encoding="utf-8")):
                found.add(attr or keyword)
    found |= {r.value for r in TlsRefusal}
    assert found - REASONS == set()


def _count_three(url: str, opts: dict[str, str], names: list[str], node: str) -> None:
    """Three messages on the first queue, none on the second; read back through kombu."""
    with Connection(url, transport_options=opts) as conn:
        q = conn.SimpleQueue(names[0])
        for i in range(3):
            q.put({"n": i})
        q.close()
    assert broker_queue_depths(url, opts, names) == {names[0]: 3, names[1]: 0}, url
    registry = CollectorRegistry()
    registry.register(QueueDepths(lambda: broker_queue_depths(url, opts, names)))
    s = _samples(generate_latest(registry).decode())
    assert s[("deidgate_queue_depth", (("node", node), ("queue", "deid")))] == 3


@pytest.mark.integration
def test_queue_depths_from_redis_and_the_filesystem_broker(tmp_path: Path) -> None:
    node = f"t{uuid.uuid4().hex[:8]}"
    names = [f"deid.{node}", f"score-{node}-unused"]
    folder = tmp_path / "broker"
    for sub in ("queue", "processed", "control"):
        (folder / sub).mkdir(parents=True)
    fs = {"data_folder_in": str(folder / "queue"), "data_folder_out": str(folder / "queue"),
          "processed_folder": str(folder / "processed"), "control_folder": str(folder / "control")}
    _count_three("filesystem://", fs, names, node)
    with redis_server(tmp_path) as (redis_url, _restart):  # our own redis-server
        _count_three(redis_url, {}, names, node)


@pytest.mark.integration
def test_broker_down_still_answers_the_scrape() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    registry = CollectorRegistry()
    registry.register(QueueDepths(lambda: broker_queue_depths(url, {}, ["default"])))
    s = _samples(generate_latest(registry).decode())
    assert s[("deidgate_broker_up", ())] == 0
