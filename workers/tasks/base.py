"""The one base task: it maps the exception hierarchy to what happens to a message, by the one
table of rules in ``service.core.errors.OUTCOMES`` (first match wins):

- a transient fault of the machine (``MemoryError``, ``OSError`` ENOSPC/EIO/...): retried, even
  where it surfaced inside the engine (the engine lets it through rather than refuse the input);
- ``Rejected``: the input is refused (the pipeline has already quarantined it); no retry;
- a ``Retryable`` marked ``permanent`` (a PACS rejecting our AE for good) and a
  ``ConfigurationError``: retrying cannot help; the work fails now (``on_failed``: by default
  dead-lettered at once, so an operator can retry it after the fix);
- ``Retryable`` and anything unexpected: retry with exponential backoff and jitter; after
  ``task_max_retries`` the task is dead-lettered in the database with its reason (PHI-free), and
  the work it stood for is marked so the job ends failed and can be retried (CLI and API).
- A step that wants another go without an error (a pull still incomplete) calls
  ``retry_later``: its row is given back and the message comes back after a countdown; no
  worker slot sleeps meanwhile.
Tasks are idempotent: a redelivered or duplicated message finds its row already claimed or
finished and does nothing. ``acks_late`` + ``reject_on_worker_lost`` keep a message when its
worker dies; the sweep re-enqueues whatever the database says is unfinished in any case.
"""

from __future__ import annotations

import logging
import random
from typing import Any, NoReturn

from celery import Task
from celery.exceptions import Retry
from sqlalchemy.orm import Session

from service.core import jsonlog, metrics
from service.core.config import Settings
from service.core.errors import DeidgateError, Outcome, Rejected, error_code, outcome_of
from service.core.keys import SiteKeys
from service.core.queues import TaskName, node_name
from service.db.models.jobs import JobStudy
from service.db.session import get_sessionmaker, session_scope
from service.jobs.recovery import dead_letter
from service.jobs.transitions import refresh_job

log = logging.getLogger(__name__)


# a task's stage label in deidgate_instances_failed_total
STAGES = {TaskName.RESOLVE_JOB.value: "resolve", TaskName.RETRIEVE_STUDY.value: "retrieve",
          TaskName.DEIDENTIFY_INSTANCE.value: "deidentify",
          TaskName.FORWARD_STUDY.value: "forward", TaskName.SWEEP.value: "sweep"}

_KEYS: dict[tuple[object, ...], SiteKeys] = {}


def site_keys(settings: Settings) -> SiteKeys:
    """Workers never generate a key: a worker host without the site's key would otherwise
    start a second pseudonym space. `serve`, `listen` or any CLI command creates it first.

    Cached per process; re-read when the sealing keys folder changes (a rotated key copied
    there is picked up without a restart)."""
    folder = settings.seal_keys_dir
    try:
        stamp = folder.stat().st_mtime_ns
    except OSError:
        stamp = 0
    secret = settings.site_key.get_secret_value() if settings.site_key is not None else None
    cache_key = (secret, settings.site_key_path, folder, stamp)
    keys = _KEYS.get(cache_key)
    if keys is None:
        keys = SiteKeys.for_settings(settings, create=False)
        _KEYS.clear()
        _KEYS[cache_key] = keys
    return keys


def safe_reason(exc: BaseException) -> str:
    """Our errors carry PHI-free reasons; anything else is named by type only (a library's
    message may quote a value from the dataset)."""
    if isinstance(exc, DeidgateError):
        return f"{exc.code}: {exc.reason}"[:500]
    return f"internal: {error_code(exc)}"


class DeidgateTask(Task):
    abstract = True
    acks_late = True
    reject_on_worker_lost = True
    ignore_result = True
    max_retries = None  # counted in __call__ against settings.task_max_retries

    @property
    def settings(self) -> Settings:
        return self.app.settings  # type: ignore[attr-defined, no-any-return]

    @property
    def keys(self) -> SiteKeys:
        return site_keys(self.settings)

    def session(self) -> Session:
        return get_sessionmaker(self.settings.db_url)()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # every line this task logs names the task and the node (JSON logs: service.core.jsonlog)
        with jsonlog.log_context(task=self.name, node=node_name(self.settings)):
            return self._call(*args, **kwargs)

    def _call(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return self.run(*args, **kwargs)
        except Retry:
            raise
        except Exception as exc:
            return self._decide(args, exc)

    def _decide(self, args: tuple[Any, ...], exc: Exception) -> dict[str, Any]:
        decided = outcome_of(exc)
        if decided is Outcome.REFUSE and isinstance(exc, Rejected):
            log.info("%s %s refused: %s", self.name, args[:1], exc.code)
            self.on_refused(args, exc)
            return {"status": "refused", "code": exc.code}
        reason = safe_reason(exc)
        metrics.count_failed(STAGES.get(self.name, "other"), metrics.reason_of(exc))
        self.release(args)
        tries = self.request.retries
        if decided is Outcome.FAIL:
            log.error("%s %s failed (%s); retrying cannot help", self.name, args[:1], reason)
            self.on_failed(args, reason, tries + 1)
            return {"status": "failed", "reason": reason}
        if tries < self.settings.task_max_retries and not self.request.is_eager:
            delay = min(300.0, self.settings.task_retry_base_s * 2**tries)
            delay *= 0.5 + random.random()  # noqa: S311 - jitter, not security
            log.warning("%s %s failed (%s); retry %d in %.1fs", self.name, args[:1], reason,
                        tries + 1, delay)
            raise self.retry(countdown=delay, max_retries=None) from None
        log.error("%s %s dead-lettered after %d attempts: %s", self.name, args[:1],
                  tries + 1, reason)
        self.dead_letter(args, reason, tries + 1)
        return {"status": "dead-lettered", "reason": reason}

    def dead_letter(self, args: tuple[Any, ...], reason: str, attempts: int) -> None:
        with session_scope(self.settings.db_url) as s:
            dead_letter(s, task=TaskName(self.name), target=str(args[0]) if args else "",
                        reason=reason, attempts=attempts)
        self.after_dead(args)

    def retry_later(self, args: tuple[Any, ...], countdown: float) -> NoReturn:
        """Give the row back and have this message delivered again after ``countdown`` s."""
        self.release(args)
        raise self.retry(countdown=countdown, max_retries=None)

    # per-task hooks
    def on_refused(self, args: tuple[Any, ...], exc: Rejected) -> None:
        pass

    def on_failed(self, args: tuple[Any, ...], reason: str, attempts: int) -> None:
        """Retrying cannot help: dead-lettered now, for an operator to retry after the fix."""
        self.dead_letter(args, reason, attempts)

    def release(self, args: tuple[Any, ...]) -> None:
        pass

    def after_dead(self, args: tuple[Any, ...]) -> None:
        pass


class StudyTask(DeidgateTask):
    """A task whose argument is a job study (retrieve, score): once it is dead-lettered, the
    study's job state is derived again, so the job shows the failure instead of waiting."""

    abstract = True

    def after_dead(self, args: tuple[Any, ...]) -> None:
        with session_scope(self.settings.db_url) as s:
            st = s.get(JobStudy, int(args[0]))
            job_id = st.job_id if st else None
        if job_id:
            with session_scope(self.settings.db_url) as s:
                refresh_job(s, job_id)
