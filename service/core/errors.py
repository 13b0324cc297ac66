"""One exception hierarchy for every outcome of processing one DICOM instance or task.

What happens to the input is decided by the class, in one place (the Celery base task and the
CLI batch loop), never by ad-hoc ``except`` blocks:

- ``Rejected``: permanent; the input is refused and kept in quarantine with ``reason``
  (non-DICOM bytes, truncated file, unsupported SOP class, policy cannot fully handle it).
- ``Retryable``: transient (database locked, PACS busy); the task retries with backoff and is
  dead-lettered after the last attempt.
- ``ConfigurationError``: the operator must fix something (bad policy YAML, missing key); the
  process refuses to start or the command exits non-zero.
- Transient faults of the machine, not of the input (``MemoryError``, an ``OSError`` such as
  ENOSPC or EIO): retried like ``Retryable``. Code that catches broadly to refuse an input
  (the engine's stages) must let them through (``transient``): a full disk is not a reason to
  quarantine a study.

``OUTCOMES`` is the one table that maps an exception to what happens; the Celery base task
(``workers.tasks.base``) and the CLI batch loop read it. A ``Retryable`` marked ``permanent``
(a PACS that rejects our AE for good) is decided there too, never re-wrapped where it is caught.

Messages must never contain PHI: they name codes, tags, keywords, file *positions*, never values.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from enum import StrEnum


class DeidgateError(Exception):
    """Base of all deidgate errors. ``code`` is a stable machine-readable slug."""

    code = "error"

    def __init__(self, reason: str, *, code: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        if code is not None:
            self.code = code

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, reason={self.reason!r})"


class ConfigurationError(DeidgateError):
    code = "configuration"


class PolicyError(ConfigurationError):
    """A policy file is malformed; the message names file, line and key."""

    code = "policy-invalid"


class SiteKeyError(ConfigurationError):
    """The site key is missing, too short, or a known default."""

    code = "site-key"


class Rejected(DeidgateError):
    """Permanent refusal of one input; it stays in quarantine with this reason."""

    code = "rejected"


class NotDicom(Rejected):
    code = "not-dicom"


class Truncated(Rejected):
    code = "truncated"


class UnsupportedSopClass(Rejected):
    code = "unsupported-sop-class"


class PolicyRefused(Rejected):
    """The policy cannot fully handle this instance (fail closed)."""

    code = "policy-refused"


class PixelRefused(Rejected):
    """Pixel data cannot be checked or cleaned safely (unknown codec, undecodable)."""

    code = "pixel-refused"


class Retryable(DeidgateError):
    """Transient. ``permanent``: retrying cannot help after all (the base task fails the work at
    once, with this reason)."""

    code = "retryable"

    def __init__(self, reason: str, *, code: str | None = None, permanent: bool = False) -> None:
        super().__init__(reason, code=code)
        self.permanent = permanent


class DeadLettered(DeidgateError):
    code = "dead-lettered"


# --- what happens to a task, decided once --------------------------------------------------------

# errors of the machine that a later attempt may not meet (disk full, I/O error, out of memory,
# too many open files, a stale or busy network file system)
TRANSIENT_ERRNOS = frozenset({
    errno.ENOSPC, errno.EIO, errno.ENOMEM, errno.EAGAIN, errno.EDQUOT, errno.EMFILE,
    errno.ENFILE, errno.ESTALE, errno.EBUSY, errno.ETIMEDOUT, errno.EINTR, errno.ENOBUFS,
})


def transient(exc: BaseException) -> bool:
    """A fault of the machine, not of the input: retry, never refuse the input for it. An
    ``OSError`` without an errno (Pillow's "broken data stream") is about the data."""
    return isinstance(exc, MemoryError) or (
        isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS)


class Outcome(StrEnum):
    REFUSE = "refuse"  # the input is refused for good; its row is marked with the code
    FAIL = "fail"  # retrying cannot help (configuration, a permanent PACS answer): fail now
    RETRY = "retry"  # backoff with jitter, then dead-lettered after the last attempt


def _is(kind: type[BaseException]) -> Callable[[BaseException], bool]:
    return lambda exc: isinstance(exc, kind)


# first match wins
OUTCOMES: tuple[tuple[str, Callable[[BaseException], bool], Outcome], ...] = (
    ("transient fault of the machine", transient, Outcome.RETRY),
    ("input refused", _is(Rejected), Outcome.REFUSE),
    ("retryable, marked permanent",
     lambda exc: isinstance(exc, Retryable) and exc.permanent, Outcome.FAIL),
    ("configuration", _is(ConfigurationError), Outcome.FAIL),
    ("retryable", _is(Retryable), Outcome.RETRY),
    ("anything unexpected", lambda exc: True, Outcome.RETRY),
)


def outcome_of(exc: BaseException) -> Outcome:
    return next(o for _, test, o in OUTCOMES if test(exc))


def error_code(exc: BaseException) -> str:
    """A PHI-free name for any exception: our code, or the type (a library's message may quote
    the data it choked on)."""
    if isinstance(exc, DeidgateError):
        return exc.code
    if isinstance(exc, OSError) and exc.errno is not None and transient(exc):
        return f"{type(exc).__name__}:{errno.errorcode.get(exc.errno, exc.errno)}"
    return type(exc).__name__
