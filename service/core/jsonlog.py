"""Structured JSON logs (``DEIDGATE_LOG_FORMAT=json``): one event per line for the hospital's log
stack, carrying the job, the study pseudonym and the node when the code that logs knows them.

Where the fields come from: ``log_context(job=..., study=..., node=...)`` around a unit of work
(a task, an association) binds them for every line logged inside it, in that thread or task;
``extra={...}`` on one call adds to them. Only the fields in ``FIELDS`` are ever written: an
``extra`` key outside it is dropped, because whatever a caller puts there is not reviewed.

PHI: the handler's filters (the PHI value filter of ``service.core.logs`` among them) run
before this formatter, as ``logging`` always runs a handler's filters before it formats, so
what they scrub never reaches the line. An exception is written as its type and frames
(file, line, function), never its message, which can quote element values
(as ``service.api.errors.log_unexpected`` does for the API).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
import traceback
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import IO, Any

from service.core.config import Settings

FIELDS = ("job", "study", "node", "stage", "event", "reason", "task", "count", "duration_s")
_context: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar(
    "deidgate_log_context", default={})  # noqa: B039 - never mutated, replaced by log_context


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Bind ``fields`` (names from ``FIELDS``) to every line logged inside the block."""
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise ValueError(f"unknown log fields: {sorted(unknown)}")
    token = _context.set({**_context.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


def _scalar(value: Any) -> Any:
    return value if isinstance(value, int | float | bool) or value is None else str(value)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        fields = dict(_context.get())
        fields.update({k: getattr(record, k) for k in FIELDS if hasattr(record, k)})
        event.update({k: _scalar(v) for k, v in fields.items() if k in FIELDS})
        if record.exc_info and record.exc_info[0] is not None:
            exc_type, _, tb = record.exc_info
            event["exception"] = {
                "type": exc_type.__name__,
                "frames": [f"{f.filename}:{f.lineno} {f.name}"
                           for f in traceback.extract_tb(tb)],
            }
        return json.dumps(event, ensure_ascii=False, separators=(",", ":"))


def json_handler(stream: IO[str] | None = None,
                 filters: Iterable[logging.Filter] = ()) -> logging.Handler:
    """A handler writing JSON lines to ``stream`` (stderr), ``filters`` first."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    for f in filters:
        handler.addFilter(f)
    return handler


def install(settings: Settings, *, stream: IO[str] | None = None,
            filters: Iterable[logging.Filter] = (), level: int = logging.INFO) -> bool:
    """Replace the root logger's handlers with the JSON handler when ``log_format`` is json;
    the process's logging setup (``service.core.logs``) calls this with its PHI filter."""
    if settings.log_format != "json":
        return False
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(json_handler(stream, filters))
    root.setLevel(level)
    return True
