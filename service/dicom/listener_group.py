"""The listener as N processes on one port (SO_REUSEPORT), like ``storescp --fork``.

One Python process receives at most about one core's worth of PDUs (the GIL), so with several
concurrent senders it fell to ~0.55 of ``storescp --fork``. Here this process runs one listener
and ``processes - 1`` spawned children run the same ``Listener`` code on the same port; the
kernel spreads new connections over them. Every child applies the allow-list, spool, free-space
floor and duplicate check itself (they are database- and filesystem-based, so shared); a child
builds its own ``on_stored`` hook and database engine (``on_stored_factory``, called in the
child), never inherits them. Children are spawned, not forked: no threads or connections of
this process are copied. They ignore SIGINT (the parent decides the stop order), stop on SIGTERM
and stop on their own when this process disappears, so none is left behind.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Self

from service.core import logs
from service.core.config import Settings
from service.core.keys import SiteKeys
from service.dicom.listener import Listener, ListenerConfig, Serving, config_from_settings
from service.dicom.spool import Spool
from service.dicom.store_handler import OnStored

log = logging.getLogger(__name__)

OnStoredFactory = Callable[[], OnStored]


def resolve_processes(setting: int) -> int:
    """0 = automatic: two processes where there are two cores (one per core; the receive path
    is mostly recv + write, more processes than cores only add memory and contention)."""
    return setting if setting > 0 else max(1, min(2, os.cpu_count() or 1))


def _child(config: ListenerConfig, db_url: str, keys: SiteKeys, spool: Spool,
           on_stored_factory: OnStoredFactory | None, conn: Connection) -> None:
    logs.install()  # a spawned process starts with no logging: the PHI filters first
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    parent = os.getppid()
    try:
        on_stored = on_stored_factory() if on_stored_factory is not None else None
        listener = Listener(config, db_url=db_url, keys=keys, spool=spool,
                            on_stored=on_stored).start(sweep=False)
    except Exception as exc:
        conn.send(f"{type(exc).__name__}: {exc}")
        return
    conn.send("ready")
    try:
        while not stop.wait(0.5):
            if os.getppid() != parent:  # parent gone (killed): do not outlive it
                break
    finally:
        listener.stop()


class ListenerGroup(Serving):
    """Same surface as ``Listener`` (config, port, start, stop, serve_forever)."""

    def __init__(self, config: ListenerConfig, *, db_url: str, keys: SiteKeys, spool: Spool,
                 processes: int, on_stored: OnStored | None = None,
                 on_stored_factory: OnStoredFactory | None = None,
                 start_timeout: float = 60.0) -> None:
        config.reuse_port = True
        self.config = config
        self.processes = max(1, processes)
        self.leader = Listener(config, db_url=db_url, keys=keys, spool=spool,
                               on_stored=on_stored)
        self._child_args = (db_url, keys, spool, on_stored_factory)
        self.start_timeout = start_timeout
        self.children: list[BaseProcess] = []

    @classmethod
    def from_settings(cls, settings: Settings, *, db_url: str, keys: SiteKeys,
                      on_stored_factory: OnStoredFactory | None = None,
                      processes: int | None = None, **overrides: Any) -> Listener | ListenerGroup:
        """A plain ``Listener`` for one process, else a group."""
        n = resolve_processes(settings.listener_processes if processes is None else processes)
        on_stored = on_stored_factory() if on_stored_factory is not None else None
        conf, spool = config_from_settings(settings, db_url=db_url, **overrides)
        if n == 1:
            return Listener(conf, db_url=db_url, keys=keys, spool=spool, on_stored=on_stored)
        return cls(conf, db_url=db_url, keys=keys, spool=spool, processes=n,
                   on_stored=on_stored, on_stored_factory=on_stored_factory)

    @property
    def port(self) -> int:
        return self.leader.port

    def start(self) -> Self:
        if self.children:
            return self
        self.leader.start()  # sweeps crash leftovers before anyone receives; fixes port 0
        child_config = ListenerConfig(**{**vars(self.config), "port": self.leader.port})
        ctx = multiprocessing.get_context("spawn")
        pending: list[tuple[BaseProcess, Connection]] = []
        try:
            for i in range(self.processes - 1):
                mine, theirs = ctx.Pipe(duplex=False)
                p: BaseProcess = ctx.Process(target=_child, name=f"deidgate-listener-{i + 1}",
                                args=(child_config, *self._child_args, theirs), daemon=True)
                p.start()
                theirs.close()
                self.children.append(p)
                pending.append((p, mine))
            deadline = time.monotonic() + self.start_timeout
            for p, conn in pending:
                if not conn.poll(max(0.0, deadline - time.monotonic())):
                    raise RuntimeError(f"listener process {p.name} did not start")
                try:
                    answer = conn.recv()
                except EOFError:
                    answer = f"exited with status {p.exitcode}"
                if answer != "ready":
                    raise RuntimeError(f"listener process {p.name} failed: {answer}")
        except BaseException:
            self.stop()
            raise
        finally:
            for _, conn in pending:
                conn.close()
        log.info("listener group: %d processes on port %d", self.processes, self.port)
        return self

    def stop(self, wait: float = 2.0) -> None:
        """Stop accepting everywhere first, then let each process stop as ``Listener.stop``."""
        children, self.children = self.children, []
        for p in children:
            if p.is_alive():
                p.terminate()  # SIGTERM: the child stops its listener cleanly
        self.leader.stop(wait)
        for p in children:
            p.join(wait + 10)
            if p.is_alive():
                p.kill()
                p.join(5)

    def alive(self) -> int:
        """How many child processes are running (for checks and tests)."""
        return sum(p.is_alive() for p in self.children)
