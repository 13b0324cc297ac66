"""Logging in every process (listener, API, workers, CLI): no PHI in any line.

Two filters, installed by ``install`` on the HANDLERS that write lines, because a filter on a
logger sees only the records that logger creates, not those its children propagate to it
(pydicom logs on ``pydicom`` and on ``pydicom.pixels.*``; a warning arrives as ``py.warnings``):

- ``WithholdValues``: pydicom quotes element values in its messages ("Invalid value for VR PN:
  '...'"); every quoted part of a message is withheld.
- ``NoExceptionText``: a record carrying an exception (``log.exception``, ``exc_info=True``, a
  library's own) is rewritten to the exception's type, a PHI-free code and its frames; the
  exception's message, which can quote the element value a parser choked on, is dropped.

``failure(exc)`` is what code here logs for an exception: its type and code, never its text.
Python warnings are routed into logging (``captureWarnings``), so they pass the same filters
instead of going to stderr raw.
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
from typing import IO

from service.core.config import Settings
from service.core.errors import error_code

_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
WITHHELD = "<value withheld>"
FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def failure(exc: BaseException) -> str:
    """How an exception is named in a log line: type and code, never its message."""
    code = error_code(exc)
    name = type(exc).__name__
    return name if code == name else f"{name} ({code})"


class WithholdValues(logging.Filter):
    """Withhold every quoted part of a message (pydicom quotes the values it warns about)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # a malformed call: its arguments could be anything
            record.msg, record.args = "(log message withheld: bad format arguments)", None
            return True
        if "'" in msg or '"' in msg:
            record.msg, record.args = _QUOTED.sub(WITHHELD, msg), None
        return True


class NoExceptionText(logging.Filter):
    """An exception's type, code and frames in the line; never its message."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            frames = "".join(f"\n  {f.filename}:{f.lineno} in {f.name}"
                             for f in traceback.extract_tb(exc.__traceback__))
            record.msg = f"{record.getMessage()} [{failure(exc)}]{frames}"
            record.args = None
            record.exc_info = None
        record.exc_text = None
        record.stack_info = None
        return True


FILTERS: tuple[type[logging.Filter], ...] = (NoExceptionText, WithholdValues)


def protect(handler: logging.Handler) -> None:
    """Add the PHI filters to one handler (idempotent); the exception filter runs first."""
    for kind in FILTERS:
        if not any(isinstance(f, kind) for f in handler.filters):
            handler.addFilter(kind())


def protect_all() -> int:
    """The filters on every handler that exists now (root's, and those of loggers that do not
    propagate, such as uvicorn's); returns how many handlers were covered."""
    handlers = list(logging.getLogger().handlers)
    for logger in list(logging.Logger.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger):
            handlers += logger.handlers
    for h in handlers:
        protect(h)
    # the library's own logger too: a handler added to it later still sees filtered records
    pydicom_log = logging.getLogger("pydicom")
    if not any(isinstance(f, WithholdValues) for f in pydicom_log.filters):
        pydicom_log.addFilter(WithholdValues())
    return len(handlers)


def install(settings: Settings | None = None, *, level: int = logging.INFO,
            stream: IO[str] | None = None) -> None:
    """The process's logging: one handler on the root logger (JSON lines when ``log_format`` is
    json, else text) with the PHI filters, warnings routed into logging, and the filters on
    every other handler already there. Call once at each process's start, after the framework
    (uvicorn, Celery) has set up its own handlers."""
    from service.core import jsonlog

    root = logging.getLogger()
    if settings is None or not jsonlog.install(settings, stream=stream,
                                               filters=[f() for f in FILTERS], level=level):
        if not root.handlers:
            handler = logging.StreamHandler(stream or sys.stderr)
            handler.setFormatter(logging.Formatter(FORMAT))
            root.addHandler(handler)
        root.setLevel(level)
    logging.captureWarnings(True)
    protect_all()
