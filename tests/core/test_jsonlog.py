"""JSON logs: one event per line, context fields, filters before formatting, no exception text."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.core.config import Settings
from service.core.jsonlog import install, json_handler, log_context

PLANTED = "Nordmann^Kari"


class ScrubPlanted(logging.Filter):
    """Stands in for the PHI value filter: it rewrites the record before it is formatted."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = str(record.getMessage()).replace(PLANTED, "[redacted]")
        record.args = None
        return True


@pytest.fixture()
def logged() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    out = io.StringIO()
    log = logging.getLogger(f"deidgate.test.{id(out)}")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    handler = json_handler(out, [ScrubPlanted()])
    log.addHandler(handler)
    yield log, out
    log.removeHandler(handler)


def _lines(out: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_one_event_per_line_with_context(logged: tuple[logging.Logger, io.StringIO]) -> None:
    log, out = logged
    with log_context(job="job-1", node="gw1"):
        log.info("instance %s of %d done", "3", 4, extra={"study": "S-7F3A", "stage": "deid"})
        with log_context(study="S-9"):
            log.warning("two\nlines")
    log.info("outside")
    a, b, c = _lines(out)
    assert a["message"] == "instance 3 of 4 done"
    assert (a["job"], a["node"], a["study"], a["stage"], a["level"]) == (
        "job-1", "gw1", "S-7F3A", "deid", "info")
    assert (b["study"], b["message"], b["level"]) == ("S-9", "two\nlines", "warning")
    assert "job" not in c and "study" not in c
    assert a["ts"].endswith("+00:00") and isinstance(a["pid"], int)


def test_filters_run_before_formatting(logged: tuple[logging.Logger, io.StringIO]) -> None:
    log, out = logged
    log.info("patient %s arrived", PLANTED)
    assert PLANTED not in out.getvalue()
    assert _lines(out)[0]["message"] == "patient [redacted] arrived"


def test_unknown_extras_are_dropped(logged: tuple[logging.Logger, io.StringIO]) -> None:
    log, out = logged
    log.info("x", extra={"patient_name": PLANTED, "job": "job-2"})
    line = _lines(out)[0]
    assert "patient_name" not in line and line["job"] == "job-2"
    with pytest.raises(ValueError, match="unknown log fields"), log_context(patient=PLANTED):
        pass


def test_exceptions_as_type_and_frames(logged: tuple[logging.Logger, io.StringIO]) -> None:
    log, out = logged
    try:
        raise ValueError(f"element (0010,0010) is {PLANTED}")
    except ValueError:
        log.exception("decode failed")
    line = _lines(out)[0]
    assert line["exception"]["type"] == "ValueError"
    assert any("test_jsonlog.py" in f for f in line["exception"]["frames"])
    assert "Kari" not in out.getvalue()


def test_context_is_per_thread(logged: tuple[logging.Logger, io.StringIO]) -> None:
    log, out = logged
    with log_context(job="main-job"):
        t = threading.Thread(target=lambda: log.info("in a thread"))
        t.start()
        t.join()
    assert "job" not in _lines(out)[0]


def test_install_follows_the_setting(tmp_path: Path) -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    out = io.StringIO()
    try:
        assert not install(Settings(home=tmp_path), stream=out)
        assert install(Settings(home=tmp_path, log_format="json"), stream=out)
        logging.getLogger("deidgate.x").info("hello")
        assert json.loads(out.getvalue().splitlines()[-1])["message"] == "hello"
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
