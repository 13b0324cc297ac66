"""A whole gateway for end-to-end tests: Orthanc loaded with exams, the listener, a Celery worker
process, optionally the REST API, on SQLite + the filesystem broker or PostgreSQL + Redis."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from service.cli.serve import Embedded, start_embedded
from service.core.config import Settings
from service.core.keys import SiteKeys
from service.db.models.jobs import JobInstance
from service.db.session import get_sessionmaker, session_scope
from synthetic.exam import Exam, fresh_exam
from tests.peers.net import free_port, wait_port
from tests.peers.orthanc import OrthancPeer, orthanc_server

GW_AE = "DEIDGATE"


@dataclass
class Gateway:
    settings: Settings
    keys: SiteKeys
    orthanc: OrthancPeer
    exams: list[Exam]
    emb: Embedded
    token: str | None = None
    worker_log: Any = None

    @property
    def db_url(self) -> str:
        return self.settings.db_url

    # --- REST ---------------------------------------------------------------------------
    def api(self, method: str, path: str, **kw: Any) -> httpx.Response:
        assert self.emb.api_url and self.token
        return httpx.request(method, f"{self.emb.api_url}/api/v1{path}",
                             headers={"Authorization": f"Bearer {self.token}"}, timeout=30, **kw)

    def submit(self, accessions: list[str] | None = None, **extra: Any) -> str:
        body = {"pacs": "orthanc",
                "accession_numbers": accessions or [e.accession for e in self.exams], **extra}
        r = self.api("POST", "/jobs", json=body)
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def job(self, job_id: str) -> dict[str, Any]:
        r = self.api("GET", f"/jobs/{job_id}")
        assert r.status_code == 200, r.text
        return dict(r.json())

    def wait(self, job_id: str, *, until: Callable[[dict[str, Any]], bool] | None = None,
             timeout: float = 90) -> dict[str, Any]:
        from service.jobs import ops

        deadline = time.monotonic() + timeout
        while True:
            with get_sessionmaker(self.db_url)() as s:
                v = ops.get_job(s, job_id)
            assert v is not None
            d = v.model_dump(mode="json")
            if (until(d) if until else d["state"] in ("done", "failed", "cancelled")):
                return d
            if time.monotonic() > deadline:
                raise AssertionError(f"job still {d['state']} after {timeout}s: {d['counts']}")
            time.sleep(0.05 if until else 0.2)

    # --- processes ----------------------------------------------------------------------
    def kill_workers(self) -> None:
        """SIGKILL the workers and their pool children (process groups): no clean-up at all."""
        self.emb.kill_workers()

    def start_workers(self, concurrency: int = 1) -> None:
        self.emb.start_workers(concurrency, self.worker_log)

    def instance_states(self) -> dict[str, int]:
        with get_sessionmaker(self.db_url)() as s:
            return dict(s.execute(select(JobInstance.state, func.count())
                                  .group_by(JobInstance.state)).all())

    def outputs(self) -> list[Path]:
        return sorted(self.settings.output_dir.rglob("*.dcm"))

    def spool_files(self) -> list[Path]:
        return [p for p in self.settings.spool_dir.iterdir() if p.is_file()]


def make_settings(tmp: Path, *, db_url: str, broker_url: str | None = None, **kw: Any) -> Settings:
    s = Settings(home=tmp / "home", database_url=db_url, broker_url=broker_url,
                 dicom_host="127.0.0.1", dicom_port=free_port(), api_port=free_port(),
                 node_name=f"t{uuid.uuid4().hex[:8]}", task_stale_s=3, sweep_interval_s=1,
                 task_retry_base_s=0.3, task_max_retries=3, spool_free_floor_mb=1,
                 environment="development", **kw)
    s.ensure_dirs()
    return s


@contextmanager
def gateway(tmp: Path, settings: Settings, *, n_exams: int = 3, api: bool = True,
            worker: bool = True, listener: bool = True, concurrency: int = 1,
            exams_from: int = 0) -> Iterator[Gateway]:
    from service.core.security import create_token
    from service.db.migrate import upgrade
    from service.dicom import admin

    upgrade(settings.db_url)
    keys = SiteKeys.load(settings.site_key_path)
    exams = [fresh_exam(tmp / "exams", index=exams_from + i) for i in range(n_exams)]
    with session_scope(settings.db_url) as s:
        admin.seed(s, settings)
        admin.set_local_ae(s, settings, ae_title=GW_AE, host="127.0.0.1",
                           port=settings.dicom_port)
    log = (tmp / "worker.log").open("ab")
    with orthanc_server(tmp / "orthanc",
                        modalities={"gw": (GW_AE, "127.0.0.1", settings.dicom_port)}) as o:
        for e in exams:
            o.upload(*e.files)
        with session_scope(settings.db_url) as s:
            admin.add_node(s, "orthanc", ae_title=o.ae_title, host="127.0.0.1",
                           port=o.dicom_port)
            admin.allow(s, o.ae_title)
            token = create_token(s, role="service", name=f"e2e-{uuid.uuid4().hex[:6]}").token
        emb = start_embedded(settings, settings.db_url, api=api, listener=listener,
                             worker=worker, concurrency=concurrency, log_file=log)
        gw = Gateway(settings, keys, o, exams, emb, token, log)
        try:
            if listener:
                wait_port(settings.dicom_port)
            yield gw
        finally:
            gw.kill_workers()  # tests need no warm shutdown; `serve` has its own test
            emb.stop(timeout=20)
            log.close()


@contextmanager
def redis_server(tmp: Path, port: int | None = None) -> Iterator[tuple[str, Callable[[], None]]]:
    """Our own redis-server (no persistence: a restart loses every queued message), and a
    function that restarts it on the same port."""
    port = port or free_port()
    exe = shutil.which("redis-server") or "/usr/bin/redis-server"
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        procs.append(subprocess.Popen(
            [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(tmp)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_port(port)

    def restart() -> None:
        p = procs[-1]
        p.kill()
        p.wait(timeout=10)
        time.sleep(0.5)
        start()

    start()
    try:
        yield f"redis://127.0.0.1:{port}/0", restart
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
