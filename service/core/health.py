"""Readiness checks: the database, the broker, the spool's free space and the scoring model.

One function per check, each returning a ``CheckResult`` (never raising): a name, ok or not, a
short code saying why, how long the check took, and numbers. No check puts an exception message
in its result (a driver's message can quote a query or a path); the code is enough to act on.

The model check reads what the scoring worker published (``write_model_status``) rather than
loading the model here: the API process must not import torch, and "loaded in the worker that
will score" is what readiness means. A status older than ``max_age_s`` is stale, as from a worker
that died without saying so; the worker rewrites it on load and on each heartbeat.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from service.core.config import Settings

Number = int | float | str


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    code: str  # "ok", or why not: unreachable, not-migrated, low-space, missing, stale, ...
    seconds: float
    data: Mapping[str, Number] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["seconds"] = round(self.seconds, 4)
        d["data"] = dict(self.data)
        return d


def _result(name: str, started: float, code: str, **data: Number) -> CheckResult:
    return CheckResult(name, code in ("ok", "not-configured"), code,
                       time.perf_counter() - started, data)


def check_database(engine: Engine, *, expected_heads: Iterable[str] | None = None) -> CheckResult:
    """``SELECT 1``; with ``expected_heads`` (``service.db.migrate.script_heads``) also that
    every Alembic head is applied, so a service is not ready on a half-migrated database."""
    started = time.perf_counter()
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            if expected_heads is not None:
                want = set(expected_heads)
                try:
                    have = {r[0] for r in conn.execute(
                        text("SELECT version_num FROM alembic_version"))}
                except SQLAlchemyError:
                    have = set()
                if have != want:
                    return _result("database", started, "not-migrated",
                                   applied=len(have & want), expected=len(want))
    except SQLAlchemyError:
        return _result("database", started, "unreachable", dialect=engine.dialect.name)
    return _result("database", started, "ok", dialect=engine.dialect.name)


def check_broker(url: str, transport_options: Mapping[str, Any] | None = None, *,
                 timeout_s: float = 3.0) -> CheckResult:
    """Connect to the Celery broker once, without kombu's retries."""
    from kombu import Connection

    started = time.perf_counter()
    transport = url.split("://", 1)[0]
    try:
        with Connection(url, transport_options=dict(transport_options or {}),
                        connect_timeout=timeout_s) as conn:
            conn.ensure_connection(max_retries=0, timeout=timeout_s)
    except Exception:  # kombu wraps each transport's own errors differently; all mean "no"
        return _result("broker", started, "unreachable", transport=transport)
    return _result("broker", started, "ok", transport=transport)


def check_spool(path: Path, *, floor_bytes: int) -> CheckResult:
    """The spool exists, is writable, and has at least ``floor_bytes`` free (the listener
    refuses C-STOREs below the same floor, so "not ready" here comes before refusals)."""
    started = time.perf_counter()
    if not path.is_dir():
        return _result("spool", started, "missing")
    if not os.access(path, os.W_OK | os.X_OK):
        return _result("spool", started, "read-only")
    usage = shutil.disk_usage(path)
    code = "ok" if usage.free >= floor_bytes else "low-space"
    return _result("spool", started, code, free_bytes=usage.free, floor_bytes=floor_bytes,
                   total_bytes=usage.total)


# --- the scoring model's status ---------------------------------------------------------------

def model_status_path(settings: Settings) -> Path:
    return settings.home / "run" / "model-status.json"


def write_model_status(path: Path, *, state: str, model: str, version: str, sha256: str,
                       device: str) -> None:
    """Called by the scoring worker after loading (``state="loaded"``), on failure
    (``"failed"``) and as a heartbeat; atomic, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"state": state, "model": model, "version": version, "sha256": sha256,
            "device": device, "pid": os.getpid(), "at": datetime.now(UTC).isoformat()}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(body), encoding="utf-8")
    os.replace(tmp, path)


def check_model(path: Path, *, required: bool, max_age_s: float = 300.0) -> CheckResult:
    """``required=False`` (no scoring on this deployment) answers ``not-configured``."""
    started = time.perf_counter()
    if not required:
        return _result("model", started, "not-configured")
    try:
        status = json.loads(path.read_text(encoding="utf-8"))
        at = datetime.fromisoformat(status["at"])
        state = str(status["state"])
    except FileNotFoundError:
        return _result("model", started, "missing")
    except (OSError, ValueError, KeyError, TypeError):
        return _result("model", started, "unreadable")
    age = (datetime.now(UTC) - at).total_seconds()
    facts: dict[str, Number] = {k: str(status.get(k, "")) for k in ("model", "version", "device")}
    facts["age_s"] = round(age, 1)
    if state != "loaded":
        return _result("model", started, "failed" if state == "failed" else "not-loaded", **facts)
    if age > max_age_s:
        return _result("model", started, "stale", **facts)
    return _result("model", started, "ok", **facts)


def readiness(results: Iterable[CheckResult]) -> tuple[bool, dict[str, Any]]:
    """(ready, body): ready when every check is; the body lists each check."""
    checks = list(results)
    ready = all(c.ok for c in checks)
    return ready, {"status": "ready" if ready else "not-ready",
                   "checks": [c.as_dict() for c in checks]}
