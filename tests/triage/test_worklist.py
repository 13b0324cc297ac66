"""The worklist service: ranking, the maximum-wait ceiling, filters, stable paging, marking
read, revealing an accession number on record, and thumbnails from real de-identified files."""

from __future__ import annotations

import io
import logging
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, JPEGLSLossless, RLELossless

from service.audit import keyring
from service.audit.store import AuditStore
from service.core.config import Settings
from service.core.keys import SiteKeys
from service.db.session import session_scope
from service.triage import actions
from service.triage.thumbs import ThumbnailUnavailable, render_png, view_file
from service.triage.worklist import Filters, exam_detail, humanize, instant, worklist
from synthetic.exam import fresh_exam
from tests.triage.seed import T0, add_deidentified, add_exam
from tests.web.seed import deidentify

NOW = T0 + timedelta(hours=10)
CEILING = timedelta(hours=4)
# (exam, score, category, hours after T0 it arrived)
ROWS = [
    ("2.25.101", 0.12, "likely-normal", 1),  # waited 9 h: over the ceiling
    ("2.25.102", 0.91, "priority", 8),
    ("2.25.103", 0.55, "standard", 7),
    ("2.25.104", 0.91, "priority", 7.5),  # ties with 102, waited longer: before it
    ("2.25.105", 0.03, "likely-normal", 2),  # waited 8 h: over, after 101
    ("2.25.106", 0.47, "standard", 9),
]


@pytest.fixture()
def filled(migrated_db: str) -> str:
    with session_scope(migrated_db) as s:
        for exam, score, category, hours in ROWS:
            add_exam(s, exam, score, category, arrived=T0 + timedelta(hours=hours))
    return migrated_db


def _exams(db: str, *, ceiling: timedelta = CEILING, as_of: datetime = NOW,
           filters: Filters | None = None) -> list[str]:
    with session_scope(db) as s:
        page = worklist(s, ceiling=ceiling, as_of=as_of, filters=filters)
        return [r.exam for r in page.items]


def test_ceiling_first_then_score_then_wait(filled: str) -> None:
    with session_scope(filled) as s:
        page = worklist(s, ceiling=CEILING, as_of=NOW)
    assert [r.exam for r in page.items] == [
        "2.25.101", "2.25.105", "2.25.104", "2.25.102", "2.25.103", "2.25.106"]
    assert [r.rank for r in page.items] == [1, 2, 3, 4, 5, 6]
    assert [r.over_ceiling for r in page.items] == [True, True, False, False, False, False]
    assert page.total == 6 and page.over_ceiling_total == 2
    first = page.items[0]
    assert first.waiting_s == 9 * 3600 and first.state == "unread"
    assert first.model_name == "mgtriage-demo" and first.demo
    assert [(v.laterality, v.view) for v in first.views] == [
        ("R", "CC"), ("L", "CC"), ("R", "MLO"), ("L", "MLO")]
    # a wide ceiling: nothing is over it, the list is the score order
    assert _exams(filled, ceiling=timedelta(days=1)) == [
        "2.25.104", "2.25.102", "2.25.103", "2.25.106", "2.25.101", "2.25.105"]


def test_read_exams_are_not_over_the_ceiling_and_stop_waiting(filled: str,
                                                              site_keys: SiteKeys) -> None:
    with session_scope(filled) as s:
        state = actions.mark_read(s, site_keys, "2.25.101", actor="reader-a",
                                  now=T0 + timedelta(hours=9))
        assert not state.already
    with session_scope(filled) as s:
        page = worklist(s, ceiling=CEILING, as_of=NOW)
        row = next(r for r in page.items if r.exam == "2.25.101")
        assert row.state == "read" and row.read_by == "reader-a" and not row.over_ceiling
        assert row.waiting_s == 8 * 3600  # arrival to reading, not to now
        assert [r.exam for r in page.items][:1] == ["2.25.105"]
        unread = worklist(s, ceiling=CEILING, as_of=NOW, filters=Filters(unread_only=True))
        assert "2.25.101" not in [r.exam for r in unread.items] and unread.total == 5
        # as of before the reading, the exam was still unread and over the ceiling
        before = worklist(s, ceiling=CEILING, as_of=T0 + timedelta(hours=8, minutes=30))
        assert before.items[0].exam == "2.25.101" and before.items[0].over_ceiling


def test_mark_read_keeps_the_first_reader_and_is_audited(filled: str,
                                                        site_keys: SiteKeys) -> None:
    with session_scope(filled) as s:
        actions.mark_read(s, site_keys, "2.25.103", actor="reader-a")
        again = actions.mark_read(s, site_keys, "2.25.103", actor="reader-b")
        assert again.already and again.read_by == "reader-a"
        with pytest.raises(actions.ExamUnknown):
            actions.mark_read(s, site_keys, "2.25.999", actor="reader-a")
        events = AuditStore(s, site_keys).events("triage-read")
    assert len(events) == 1
    assert events[0].actor == "reader-a" and events[0].details is not None
    assert events[0].details["exam"] == "2.25.103"


def test_filters_category_dates_unread(filled: str) -> None:
    assert _exams(filled, filters=Filters(category="priority")) == ["2.25.104", "2.25.102"]
    with session_scope(filled) as s:
        add_exam(s, "2.25.107", 0.99, "priority", arrived=T0 - timedelta(days=1))
    day = T0.date()
    assert "2.25.107" not in _exams(filled, filters=Filters(date_from=day))
    assert _exams(filled, filters=Filters(date_to=day - timedelta(days=1))) == ["2.25.107"]
    assert _exams(filled, filters=Filters(date_from=day, date_to=day - timedelta(days=1))) == []
    assert len(_exams(filled, filters=Filters(date_from=date.min, date_to=date.max))) == 7
    with pytest.raises(ValueError):
        Filters(category="urgent")


def test_paging_is_stable_while_exams_arrive(filled: str) -> None:
    with session_scope(filled) as s:
        first = worklist(s, ceiling=CEILING, as_of=NOW, limit=3)
    with session_scope(filled) as s:  # a new top-scored exam arrives between the two pages
        add_exam(s, "2.25.108", 0.99, "priority", arrived=NOW + timedelta(seconds=1))
    with session_scope(filled) as s:
        second = worklist(s, ceiling=CEILING, as_of=first.as_of, limit=3, offset=3)
        fresh = worklist(s, ceiling=CEILING, as_of=NOW + timedelta(minutes=1), limit=1)
    seen = [r.exam for r in first.items + second.items]
    assert seen == ["2.25.101", "2.25.105", "2.25.104", "2.25.102", "2.25.103", "2.25.106"]
    assert [r.rank for r in second.items] == [4, 5, 6]
    assert fresh.items[0].exam == "2.25.101" and fresh.total == 7  # the ceiling still leads


def test_far_off_instants_clamp_instead_of_failing(filled: str) -> None:
    far = datetime(9999, 12, 31, 23, 59, tzinfo=UTC)
    assert instant(datetime(1, 1, 1, tzinfo=UTC)).year == 1
    assert len(_exams(filled, as_of=far)) == 6
    assert _exams(filled, as_of=datetime(1, 1, 1, tzinfo=UTC)) == []
    assert len(_exams(filled, ceiling=timedelta(days=999_999), as_of=far)) == 6


def test_humanize() -> None:
    assert [humanize(s) for s in (0, 59, 60, 3600, 3660, 86400, 90000)] == [
        "under 1 min", "under 1 min", "1 min", "1 h", "1 h 1 min", "1 d", "1 d 1 h"]


# -- with real de-identified exams -------------------------------------------------------------

@pytest.fixture()
def deid_exam(settings: Settings, migrated_db: str, tmp_path: Path) -> tuple[str, str]:
    """(pseudonymous exam UID, original accession) for an exam the pipeline wrote."""
    keys = SiteKeys.for_settings(settings)
    exam = fresh_exam(tmp_path / "exam", index=11)
    results = deidentify(settings, keys, exam)
    with session_scope(migrated_db) as s:
        entry = add_deidentified(s, settings.output_dir, [r.out_path for r in results  # type: ignore[misc]
                                                          if r.out_path], 0.8, "priority",
                                 arrived=T0)
        return entry.exam, exam.accession


def test_reveal_records_before_it_answers_and_never_logs(
    settings: Settings, deid_exam: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    keys = SiteKeys.for_settings(settings)
    exam, accession = deid_exam
    caplog.set_level(logging.DEBUG)
    with session_scope(settings.db_url) as s:
        for reason, confirmed in (("short", True), ("onewordonlyhere", True),
                                  ("ticket 42 follow-up", False)):
            with pytest.raises(actions.RevealRefused):
                actions.reveal_accession(s, keys, exam, reason=reason, confirmed=confirmed,
                                         actor="staff-a")
        assert AuditStore(s, keys).reidentifications() == []  # refused: nothing looked up
        got = actions.reveal_accession(s, keys, exam, reason="  recall ticket 42 follow-up ",
                                       confirmed=True, actor="staff-a")
        assert got == accession
        events = AuditStore(s, keys).reidentifications()
    assert len(events) == 1
    e = events[0]
    assert e.actor == "staff-a" and e.details is not None
    assert e.details["reason"] == "recall ticket 42 follow-up"
    assert e.details["exam"] == exam and e.details["kinds"] == ["accession"]
    assert accession not in str(e.details)
    assert accession not in caplog.text


def test_reveal_opens_a_mapping_sealed_under_a_rotated_key(
    settings: Settings, deid_exam: tuple[str, str]
) -> None:
    """After ``keys rotate`` + ``rekey`` the accession mapping is sealed under the new key, not
    the site key: the reveal decrypts each row under its own key, as the auditors' lookup."""
    exam, accession = deid_exam
    keys = SiteKeys.for_settings(settings)
    with session_scope(settings.db_url) as s:
        keys, seal = keyring.create(s, keys, settings.home / "keys", actor="test")
        keyring.activate(s, keys, seal.key_id, actor="test")
    with session_scope(settings.db_url) as s:
        assert keyring.rekey(s, keys, actor="test") > 0
    keys = SiteKeys.for_settings(settings)
    with session_scope(settings.db_url) as s:
        assert actions.reveal_accession(s, keys, exam, reason="recall ticket 42 follow-up",
                                        confirmed=True, actor="staff-a") == accession


def test_reveal_without_accession_is_recorded_and_refused(filled: str,
                                                          site_keys: SiteKeys) -> None:
    with session_scope(filled) as s:
        with pytest.raises(actions.AccessionUnknown):
            actions.reveal_accession(s, site_keys, "2.25.101", reason="ticket 42 follow-up",
                                     confirmed=True, actor="staff-a")
        with pytest.raises(actions.ExamUnknown):
            actions.reveal_accession(s, site_keys, "2.25.9", reason="ticket 42 follow-up",
                                     confirmed=True, actor="staff-a")
        events = AuditStore(s, site_keys).reidentifications()
    assert len(events) == 1 and events[0].details is not None
    assert events[0].details["matches"] == 0


def test_thumbnails_from_the_output_folder(settings: Settings,
                                           deid_exam: tuple[str, str]) -> None:
    exam, _ = deid_exam
    with session_scope(settings.db_url) as s:
        row = exam_detail(s, exam, ceiling=CEILING, as_of=NOW)
    assert row is not None and len(row.views) == 4 and row.has_accession
    path = view_file(settings.output_dir, row.views[0].file)
    png = Image.open(io.BytesIO(render_png(path)))
    assert png.mode == "L" and png.size == (48, 64)  # small synthetic views: not enlarged
    pixels = np.asarray(png)
    assert pixels.max() > 200 and pixels.min() < 30  # windowed: the full grey range is used
    for bad in ("../../etc/passwd", "/etc/hostname", None, "x/missing.dcm"):
        with pytest.raises(ThumbnailUnavailable):
            view_file(settings.output_dir, bad)


def test_monochrome1_is_inverted(settings: Settings, migrated_db: str, tmp_path: Path) -> None:
    """The same exam stored MONOCHROME1 (values inverted) renders as the MONOCHROME2 one."""
    keys = SiteKeys.for_settings(settings)
    shown = {}
    for photometric in ("MONOCHROME2", "MONOCHROME1"):
        exam = fresh_exam(tmp_path / photometric, index=12, photometric=photometric)
        out = [r.out_path for r in deidentify(settings, keys, exam) if r.out_path]
        shown[photometric] = np.asarray(Image.open(io.BytesIO(render_png(out[0])))).astype(int)
    diff = np.abs(shown["MONOCHROME2"] - shown["MONOCHROME1"])
    assert np.median(diff) <= 2, np.median(diff)


@pytest.mark.parametrize("ts", [JPEG2000Lossless, JPEGLSLossless, RLELossless])
def test_compressed_views_render_like_uncompressed(settings: Settings, migrated_db: str,
                                                   tmp_path: Path, ts: str) -> None:
    """Lossless JPEG 2000, JPEG-LS and RLE outputs decode to the same thumbnail as the
    uncompressed exam (same synthetic identity and pixels, another transfer syntax)."""
    keys = SiteKeys.for_settings(settings)
    shown = []
    for syntax in (ExplicitVRLittleEndian, ts):
        exam = fresh_exam(tmp_path / str(syntax), index=13, transfer_syntax=syntax)
        out = [r.out_path for r in deidentify(settings, keys, exam) if r.out_path]
        assert str(pydicom.dcmread(out[0], stop_before_pixels=True)
                   .file_meta.TransferSyntaxUID) == str(syntax)
        shown.append(np.asarray(Image.open(io.BytesIO(render_png(out[0])))))
    assert shown[0].shape == shown[1].shape and np.array_equal(shown[0], shown[1])
