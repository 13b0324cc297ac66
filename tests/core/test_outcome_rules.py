"""Outcomes decided in one place, and no PHI in any log line (issue 7 section 6): the table of
rules, the base task reading it (a transient fault retried, a permanent PACS answer failing the
work at once, a refusal), the log filters on the handler that writes the line, and settings
errors that never echo the rejected value."""

from __future__ import annotations

import errno
import io
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from celery.exceptions import Retry
from pydantic import ValidationError
from sqlalchemy import select

from service.core import logs
from service.core.config import Settings
from service.core.errors import (
    NotDicom,
    Outcome,
    PolicyError,
    Retryable,
    outcome_of,
)
from service.core.queues import TaskName
from service.db.models.jobs import DeadLetter
from service.db.session import get_sessionmaker
from service.dicom.scu import PacsError
from workers.celery_app import create_celery
from workers.tasks.base import DeidgateTask

PLANTED = "Kjaerstad^Ingrid"


@pytest.mark.parametrize(("exc", "expected"), [
    (MemoryError(), Outcome.RETRY),
    (OSError(errno.ENOSPC, "No space left on device"), Outcome.RETRY),
    (OSError(errno.EIO, "Input/output error"), Outcome.RETRY),
    (NotDicom("no DICOM Part 10 header"), Outcome.REFUSE),
    (PacsError("our AE is unknown to it", code="pacs-rejected", permanent=True), Outcome.FAIL),
    (PacsError("busy", code="pacs-busy"), Outcome.RETRY),
    (Retryable("database locked"), Outcome.RETRY),
    (PolicyError("bad policy"), Outcome.FAIL),
    (KeyError("anything unexpected"), Outcome.RETRY),
])
def test_the_table(exc: BaseException, expected: Outcome) -> None:
    assert outcome_of(exc) is expected


@pytest.fixture()
def probe(tmp_path: Path) -> Any:
    """A task on the base class, in a Celery app on the filesystem broker; it raises what the
    test puts in ``raises``."""
    from service.db.migrate import upgrade

    s = Settings(home=tmp_path / "home", task_max_retries=2)
    s.ensure_dirs()
    upgrade(s.db_url)
    app = create_celery(s)
    raises: list[BaseException] = []

    @app.task(bind=True, base=DeidgateTask, name=TaskName.SWEEP.value)
    def task(self: DeidgateTask, target: str) -> dict[str, Any]:
        raise raises[0]

    def call(exc: BaseException) -> Any:
        raises[:] = [exc]
        task.push_request(id="t1", args=["7"], kwargs={}, retries=0, is_eager=False,
                          called_directly=False, delivery_info={})
        try:
            return task("7")
        finally:
            task.pop_request()

    call.settings = s  # type: ignore[attr-defined]
    return call


def _dead(settings: Settings) -> list[DeadLetter]:
    with get_sessionmaker(settings.db_url)() as s:
        return list(s.scalars(select(DeadLetter)))


def test_base_task_retries_a_transient_fault(probe: Any) -> None:
    with pytest.raises(Retry):
        probe(OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(Retry):
        probe(MemoryError())
    assert _dead(probe.settings) == []


def test_base_task_fails_a_permanent_retryable_at_once(probe: Any) -> None:
    res = probe(PacsError("PACS node p rejected the association", code="pacs-rejected",
                          permanent=True))
    assert res["status"] == "failed"
    [dl] = _dead(probe.settings)  # no retries: for an operator to retry after the fix
    assert dl.attempts == 1 and dl.reason.startswith("pacs-rejected:")


def test_base_task_refuses_a_rejected_input(probe: Any) -> None:
    assert probe(NotDicom("no header")) == {"status": "refused", "code": "not-dicom"}


def _line(record_logger: str, build: Any) -> str:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    logs.protect(handler)
    log = logging.getLogger(record_logger)
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    try:
        build(log)
    finally:
        log.removeHandler(handler)
    return out.getvalue()


def test_an_exception_is_logged_as_type_and_code_only() -> None:
    def build(log: logging.Logger) -> None:
        try:
            int(PLANTED)
        except ValueError:
            log.exception("parsing failed")

    text = _line("deidgate.test", build)
    assert "ValueError" in text and "parsing failed" in text
    assert "Kjaerstad" not in text


def test_a_child_logger_of_pydicom_is_filtered_too() -> None:
    """pydicom.pixels.* log on their own loggers: a filter on "pydicom" never sees them; the
    handler's does."""
    text = _line("pydicom.pixels.decoders.base",
                 lambda log: log.warning("Invalid value for VR PN: '%s'", PLANTED))
    assert "withheld" in text and "Kjaerstad" not in text


def test_failure_names_type_and_code() -> None:
    assert logs.failure(OSError(errno.ENOSPC, PLANTED)) == "OSError (OSError:ENOSPC)"
    assert logs.failure(ValueError(PLANTED)) == "ValueError"
    assert logs.failure(NotDicom(PLANTED)) == "NotDicom (not-dicom)"


def test_settings_errors_never_echo_the_value(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as ei:
        Settings(home=tmp_path, dicom_port=PLANTED)  # type: ignore[arg-type]
    assert "Kjaerstad" not in str(ei.value)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEIDGATE_")}
    env.update(DEIDGATE_HOME=str(tmp_path / "h"), DEIDGATE_DICOM_PORT=PLANTED,
               DEIDGATE_LOG_FORMAT=PLANTED)
    r = subprocess.run([sys.executable, "-m", "service.cli.main", "job", "list"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "DEIDGATE_DICOM_PORT: int_parsing" in r.stderr
    assert "DEIDGATE_LOG_FORMAT" in r.stderr
    assert "Kjaerstad" not in r.stdout + r.stderr
