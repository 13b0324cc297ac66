"""``deidgate serve`` and ``deidgate worker``: the embedded single-machine mode.

``serve`` runs, from one command and with no configuration: the REST API (uvicorn, in a thread),
the DICOM listener (threads), and two Celery workers (child processes; SQLite + the filesystem
broker by default): one for this host's deid queue (a process per core: pixel work is CPU-bound)
and one for the default and score queues (C-FIND/C-MOVE wait on the network, and a move must
never hold a slot that de-identification needs). Ctrl-C or SIGTERM stops them in the
safe order: no new associations, then the API, then the workers finish (warm shutdown) what they
hold; anything cut short is redone by the sweep on the next start.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Annotated, Any

import typer

from service.cli.common import state, stop_signals
from service.core import logs
from service.core.config import Settings
from service.core.keys import SiteKeys
from service.core.queues import DEFAULT_QUEUE, SCORE_QUEUE, deid_queue, node_name, queue_names

log = logging.getLogger("deidgate.serve")


def settings_env(settings: Settings) -> dict[str, str]:
    """The child processes get exactly this process's settings (not whatever env they find)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEIDGATE_")}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        env[f"DEIDGATE_{name.upper()}"] = str(value)
    env["DEIDGATE_HOME"] = str(settings.home)
    return env


def worker_command(settings: Settings, *, queues: list[str] | None = None,
                   concurrency: int | None = None, name: str | None = None,
                   pool: str = "prefork") -> list[str]:
    qs = queues or queue_names(settings)
    role = name or ("deid" if qs == [deid_queue(settings)] else "w")
    return [sys.executable, "-m", "celery", "-A", "workers.celery_app:app", "worker",
            "-Q", ",".join(qs), "-c", str(concurrency or max(1, os.cpu_count() or 1)),
            "-P", pool, "-n", f"deidgate-{role}-{node_name(settings)}@%h", "-l", "INFO",
            "--without-gossip", "--without-mingle", "--without-heartbeat"]


def embedded_workers(settings: Settings, concurrency: int | None) -> list[list[str]]:
    """De-identification on processes (one per core); resolving/retrieving on two more (they
    mostly wait on the network; two matches a PACS node's default association limit)."""
    return [
        worker_command(settings, queues=[deid_queue(settings)], concurrency=concurrency),
        # prefork, not threads: a threads-pool worker does not recover from a Redis restart
        # (kombu fails the ack of the task in flight and the consumer never comes back)
        worker_command(settings, queues=[DEFAULT_QUEUE, SCORE_QUEUE], concurrency=2),
    ]


@dataclass
class Embedded:
    """The running parts; ``stop()`` is idempotent."""

    settings: Settings
    api_url: str | None = None
    listener: Any = None
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    api_server: Any = None
    api_thread: threading.Thread | None = None
    threads: list[threading.Thread] = field(default_factory=list)

    def stop(self, timeout: float = 60.0) -> None:
        self.stopped.set()  # the supervisor must not restart what we stop
        if self.listener is not None:
            self.listener.stop()
            self.listener = None
        if self.api_server is not None:
            self.api_server.should_exit = True
            if self.api_thread is not None:
                self.api_thread.join(timeout=15)
            self.api_server = None
        with self.lock:
            for w in self.workers:  # warm shutdown: each finishes the task it holds
                if w.poll() is None:
                    w.send_signal(signal.SIGTERM)
            for w in self.workers:
                try:
                    w.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    w.kill()
                    w.wait(timeout=10)
            self.workers = []

    commands: list[list[str]] = field(default_factory=list)
    log_file: Any = None
    restarts: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopped: threading.Event = field(default_factory=threading.Event)
    gave_up: bool = False

    def _spawn(self, cmd: list[str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            cmd, env=settings_env(self.settings), stdout=self.log_file,
            stderr=subprocess.STDOUT if self.log_file else None,
            start_new_session=True)  # our stop order, not the terminal's Ctrl-C

    def start_workers(self, concurrency: int | None = None, log_file: Any = None) -> None:
        with self.lock:
            self.log_file = log_file
            self.commands = embedded_workers(self.settings, concurrency)
            self.workers = [self._spawn(cmd) for cmd in self.commands]

    def kill_workers(self) -> None:
        """SIGKILL the workers and their pool children (process groups): no clean-up at all."""
        with self.lock:
            for w in self.workers:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(w.pid, signal.SIGKILL)
                w.wait(timeout=10)
            self.workers = []

    def supervise(self, *, max_restarts: int = 5, window_s: float = 300.0) -> bool:
        """Restart any worker process that exited on its own; False when they keep dying.

        Celery's consumer can give up for good on a broker connection loss ("Unrecoverable
        error" while restoring unacknowledged messages to a Redis that is still down). In a
        deployment the process supervisor restarts it; in embedded mode this is that supervisor.
        Restarting is safe: tasks are idempotent and the sweep re-sends lost work.
        """
        with self.lock:
            now = time.monotonic()
            self.restarts = [t for t in self.restarts if now - t < window_s]
            for i, w in enumerate(self.workers):
                if w.poll() is None:
                    continue
                if len(self.restarts) >= max_restarts:
                    return False
                log.warning("worker process exited (status %s); restarting it", w.returncode)
                self.restarts.append(now)
                self.workers[i] = self._spawn(self.commands[i])
            return True

    def start_supervisor(self) -> None:
        def loop() -> None:
            while not self.stopped.wait(0.5):
                if not self.supervise():
                    self.gave_up = True
                    return

        t = threading.Thread(target=loop, name="deidgate-supervisor", daemon=True)
        t.start()
        self.threads.append(t)

    def run_until(self, stop: threading.Event) -> None:
        """Block until ``stop`` is set, or the supervisor gives up on workers that keep dying."""
        while not stop.wait(0.5):
            if self.gave_up:
                typer.echo("worker processes keep exiting; stopping", err=True)
                return


def start_embedded(
    settings: Settings, db_url: str, *, api: bool = True, listener: bool = True,
    worker: bool = True, concurrency: int | None = None, log_file: Any = None,
) -> Embedded:
    settings.ensure_dirs()
    keys = SiteKeys.for_settings(settings)
    emb = Embedded(settings)
    try:
        if worker:
            emb.start_workers(concurrency, log_file)
            emb.start_supervisor()
        if listener:
            # imported when used: every `deidgate` command loads this module
            from service.dicom.listener_group import ListenerGroup
            from service.jobs.on_stored import make_on_stored

            # each listener process builds its own hook (and database engine) from settings
            emb.listener = ListenerGroup.from_settings(
                settings, db_url=db_url, keys=keys,
                on_stored_factory=functools.partial(make_on_stored, settings)).start()
        if api:
            import uvicorn

            from service.api.app import create_app

            config = uvicorn.Config(create_app(settings), host=settings.api_host,
                                    port=settings.api_port, log_level="warning",
                                    lifespan="on")
            logs.protect_all()  # uvicorn's own handlers, configured just now
            server = uvicorn.Server(config)
            # uvicorn installs no signal handlers off the main thread: `serve` keeps them
            t = threading.Thread(target=server.run, name="deidgate-api", daemon=True)
            t.start()
            deadline = time.monotonic() + 30
            while not server.started and t.is_alive() and time.monotonic() < deadline:
                time.sleep(0.05)
            if not server.started:
                raise RuntimeError(f"the API did not start on {settings.api_host}:"
                                   f"{settings.api_port} (port in use?)")
            emb.api_server, emb.api_thread = server, t
            emb.api_url = f"http://{settings.api_host}:{settings.api_port}"
    except BaseException:
        emb.stop(timeout=10)
        raise
    return emb


def serve(
    ctx: typer.Context,
    no_api: Annotated[bool, typer.Option("--no-api")] = False,
    no_listener: Annotated[bool, typer.Option("--no-listener")] = False,
    no_worker: Annotated[bool, typer.Option("--no-worker")] = False,
    concurrency: Annotated[int | None, typer.Option("--concurrency", "-c")] = None,
) -> None:
    """Run the API, the DICOM listener and the workers on this machine until Ctrl-C."""
    st = state(ctx)
    logs.install(st.settings, level=logging.INFO)
    db_url = st.db_url()
    with stop_signals() as stop:
        emb = start_embedded(st.settings, db_url, api=not no_api, listener=not no_listener,
                             worker=not no_worker, concurrency=concurrency)
        try:
            if emb.api_url:
                typer.echo(f"API      {emb.api_url}/api/v1  (docs {emb.api_url}/docs)")
            if emb.listener is not None:
                c = emb.listener.config
                typer.echo(f"DICOM    AE {c.ae_title} on {c.host}:{emb.listener.port}")
            typer.echo(f"data     {st.settings.home}   (Ctrl-C stops)")
            emb.run_until(stop)
        finally:
            typer.echo("stopping ...", err=True)
            emb.stop()
    typer.echo("stopped", err=True)


def worker(
    ctx: typer.Context,
    queues: Annotated[str | None, typer.Option("--queues", "-Q",
                      help="comma-separated; 'deid' means this host's deid.<node> queue")] = None,
    concurrency: Annotated[int | None, typer.Option("--concurrency", "-c")] = None,
) -> None:
    """Run a Celery worker (deployment: one per role and host)."""
    st = state(ctx)
    st.db_url()
    qs = None
    if queues:
        qs = [deid_queue(st.settings) if q.strip() == "deid" else q.strip()
              for q in queues.split(",") if q.strip()]
    cmd = worker_command(st.settings, queues=qs, concurrency=concurrency)
    os.execve(cmd[0], cmd, settings_env(st.settings))  # noqa: S606 - replace this process


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("worker")(worker)
