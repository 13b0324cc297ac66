"""One exception hierarchy for every outcome of processing one DICOM instance or task.

What happens to the input is decided by the class, in one place (the Celery base task and the
CLI batch loop), never by ad-hoc ``except`` blocks:

- ``Rejected``: permanent; the input is refused and kept in quarantine with ``reason``
  (non-DICOM bytes, truncated file, unsupported SOP class, policy cannot fully handle it).
- ``Retryable``: transient (database locked, PACS busy); the task retries with backoff and is
  dead-lettered after the last attempt.
- ``ConfigurationError``: the operator must fix something (bad policy YAML, missing key); the
  process refuses to start or the command exits non-zero.

Messages must never contain PHI: they name codes, tags, keywords, file *positions*, never values.
"""

from __future__ import annotations


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
    code = "retryable"


class DeadLettered(DeidgateError):
    code = "dead-lettered"
