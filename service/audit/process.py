"""What every process of the gateway installs at its start, in one call per process.

``start_process(settings, role)`` is called by each entry point: ``serve`` and ``listen`` (and
each spawned listener process), every Celery pool process (``worker_process_init``) and the
API app (``create_app``). It installs, once per process id:

- the process's logging (service.core.logs: the PHI filters on every handler, JSON lines
  when ``log_format=json``);
- the key check: the site key and every sealing key file are read now, so a key file that
  group or others can read (or a missing one) stops the process at start, with the file named;
- this process's Prometheus metrics (multiprocess files under ``HOME/metrics``);
- this process's ATNA exporter (service.audit.atna_export), when an audit repository is set.

It lives in the audit package because the ATNA exporter does (service.core must not import it).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from service.audit import atna_export
from service.core import logs, metrics
from service.core.config import Settings
from service.core.keys import SiteKeys

log = logging.getLogger(__name__)
_started: dict[int, str] = {}


def start_process(settings: Settings, role: str, *, check_keys: bool = True,
                  create_key: bool | None = None) -> bool:
    """Install logs, metrics and the ATNA exporter for this process; False when this process
    was started already (a second call does nothing)."""
    pid = os.getpid()
    if pid in _started:
        return False
    _started[pid] = role
    logs.install(settings)
    if check_keys:
        SiteKeys.for_settings(settings, create=create_key)
    m = metrics.configure(settings)
    atna_export.configure(settings, on_drop=m.audit_drop)
    log.info("%s process started (pid %d)", role, pid)
    return True


def started_role() -> str | None:
    return _started.get(os.getpid())


def child_hook(settings: Settings, role: str,
               factory: Callable[[], Any] | None = None) -> Any:
    """An ``on_stored_factory`` for spawned listener processes: start the process, then build
    the real hook (picklable as ``functools.partial(child_hook, settings, role, factory)``)."""
    start_process(settings, role)
    return factory() if factory is not None else None
