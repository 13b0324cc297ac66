"""The screening staff's pages on real de-identified exams: the ranked worklist with badges,
the ceiling, filters and thumbnails, the exam page, marking read, revealing an accession
number on record; no PHI in URLs or titles, and every page no-store."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.audit.store import AuditStore
from service.core.config import Settings
from service.core.keys import SiteKeys
from service.core.security import Role
from service.db.base import utcnow
from service.db.session import session_scope
from synthetic.exam import Exam, fresh_exam
from tests.triage.seed import add_deidentified, add_exam
from tests.web.conftest import ORIGIN
from tests.web.seed import deidentify

SignedIn = Callable[[Role], tuple[TestClient, str]]
_TITLE = re.compile(r"<title>(.*?)</title>")


@pytest.fixture()
def exams(settings: Settings, migrated_db: str, tmp_path: Path) -> list[tuple[str, Exam]]:
    """Three de-identified exams on the worklist: (pseudonymous UID, the original exam)."""
    keys = SiteKeys.for_settings(settings)
    out = []
    now = utcnow()
    plan = [(0.93, "priority", timedelta(hours=2)), (0.08, "likely-normal", timedelta(days=5)),
            (0.41, "standard", timedelta(hours=1))]
    for i, (score, category, waited) in enumerate(plan):
        exam = fresh_exam(tmp_path / f"exam{i}", index=30 + i)
        files = [r.out_path for r in deidentify(settings, keys, exam) if r.out_path]
        with session_scope(migrated_db) as s:
            uid = add_deidentified(s, settings.output_dir, files, score, category,
                                   arrived=now - waited).exam
        out.append((uid, exam))
    return out


def _phi(exam: Exam) -> list[str]:
    return [exam.patient_id, exam.accession, exam.study_uid, exam.patient_name, *exam.sop_uids]


def test_worklist_ranked_with_ceiling_badges_thumbnails(
    signed_in: SignedIn, exams: list[tuple[str, Exam]]
) -> None:
    c, _ = signed_in(Role.staff)
    r = c.get("/worklist")
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    assert _TITLE.search(r.text).group(1) == "Worklist · deidgate"  # type: ignore[union-attr]
    order = re.findall(r'<tr data-exam="([0-9.]+)"', r.text)
    # the 5-day wait is over the 3-day ceiling: first, although its score is the lowest
    assert order == [exams[1][0], exams[0][0], exams[2][0]]
    assert "Maximum wait 3 d" in r.text and "1 exam is over it now" in r.text
    assert "Over maximum wait" in r.text
    assert 'class="badge cat-priority">Priority<' in r.text
    assert "synthetic demo model — not for clinical use" in r.text
    thumbs = re.findall(r'<img src="(/worklist/[0-9.]+/views/[0-9.]+\.png)"', r.text)
    assert len(thumbs) == 12
    png = c.get(thumbs[0])
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(png.content)).size == (48, 64)
    for _, exam in exams:
        for value in _phi(exam):
            assert value not in r.text
    assert c.get(thumbs[0].replace("/views/", "/views/9")).status_code == 404


def test_filters(signed_in: SignedIn, exams: list[tuple[str, Exam]]) -> None:
    c, csrf = signed_in(Role.admin)
    r = c.get("/worklist?category=priority")
    assert re.findall(r'<tr data-exam="([0-9.]+)"', r.text) == [exams[0][0]]
    today = utcnow().date().isoformat()
    r = c.get(f"/worklist?date_from={today}")
    assert exams[1][0] not in r.text  # arrived five days ago
    r = c.get("/worklist?date_from=not-a-date&category=urgent")
    assert r.status_code == 200 and "not a date" in r.text and "Unknown category" in r.text
    assert c.post(f"/worklist/{exams[0][0]}/read", headers={**ORIGIN, "X-CSRF-Token": csrf},
                  data={"back": "list"}).status_code == 303
    r = c.get("/worklist?unread=1")
    assert re.findall(r'<tr data-exam="([0-9.]+)"', r.text) == [exams[1][0], exams[2][0]]


def test_exam_page_read_and_reveal(signed_in: SignedIn, settings: Settings,
                                   exams: list[tuple[str, Exam]]) -> None:
    c, csrf = signed_in(Role.staff)
    uid, exam = exams[0]
    r = c.get(f"/worklist/{uid}")
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    assert _TITLE.search(r.text).group(1) == "Exam · deidgate"  # type: ignore[union-attr]
    assert r.text.count('alt="R CC view, de-identified"') == 1
    assert len(re.findall(r"score 0\.930", r.text)) == 4  # per-view scores
    assert "mgtriage-demo" in r.text and "synthetic demo model — not for clinical use" in r.text
    headers = {**ORIGIN, "X-CSRF-Token": csrf, "HX-Request": "true"}
    r = c.post(f"/worklist/{uid}/read", headers=headers)
    assert r.status_code == 200 and "Read by user:staff-user" in r.text
    assert "Read by user:staff-user" in c.get(f"/worklist/{uid}").text
    # reveal: refused without a reason or a confirmation, nothing looked up
    for data in ({"reason": "", "confirm": "yes"}, {"reason": "ticket 42 recall"},
                 {"reason": "oneword", "confirm": "yes"}):
        r = c.post(f"/worklist/{uid}/reveal", headers=headers, data=data)
        assert r.status_code == 422 and exam.accession not in r.text
    keys = SiteKeys.for_settings(settings)
    with session_scope(settings.db_url) as s:
        assert AuditStore(s, keys).reidentifications() == []
    r = c.post(f"/worklist/{uid}/reveal", headers=headers,
               data={"reason": "recall ticket 42", "confirm": "yes"})
    assert r.status_code == 200 and exam.accession in r.text
    assert r.headers["cache-control"] == "no-store"
    with session_scope(settings.db_url) as s:
        events = AuditStore(s, keys).reidentifications()
    assert [e.actor for e in events] == ["user:staff-user"]
    assert events[0].details is not None and events[0].details["reason"] == "recall ticket 42"
    # without htmx: the exam page with the answer in place
    r = c.post(f"/worklist/{uid}/reveal", headers={**ORIGIN, "X-CSRF-Token": csrf},
               data={"reason": "recall ticket 43", "confirm": "yes"})
    assert r.status_code == 200 and exam.accession in r.text and "<h1>Exam</h1>" in r.text


def test_unknown_exams_and_rows_without_results(signed_in: SignedIn,
                                                migrated_db: str) -> None:
    c, csrf = signed_in(Role.staff)
    assert c.get("/worklist/2.25.424242").status_code == 404
    assert c.get("/worklist/not-a-uid").status_code == 404
    headers = {**ORIGIN, "X-CSRF-Token": csrf}
    assert c.post("/worklist/2.25.424242/read", headers=headers).status_code == 404
    with session_scope(migrated_db) as s:
        add_exam(s, "2.25.77", 0.5, "standard", views=[])
    r = c.get("/worklist/2.25.77")
    assert r.status_code == 200 and "No views are recorded" in r.text
    assert "No accession number is recorded" in r.text


def test_pages_are_ranked_as_of_the_first_one(signed_in: SignedIn, migrated_db: str) -> None:
    now = utcnow()
    with session_scope(migrated_db) as s:
        for i in range(30):
            add_exam(s, f"2.25.{500 + i}", round(0.9 - i * 0.01, 2), "standard",
                     arrived=now - timedelta(minutes=60 - i))
    c, _ = signed_in(Role.staff)
    first = c.get("/worklist")
    rows = re.findall(r'<tr data-exam="([0-9.]+)"', first.text)
    assert len(rows) == 25 and rows[0] == "2.25.500"
    nxt = re.search(r'<a href="(/worklist\?offset=25&amp;as_of=[^"]+)">Next page', first.text)
    assert nxt, "no next-page link carrying as_of"
    with session_scope(migrated_db) as s:  # a top score arrives after page 1 was ranked
        add_exam(s, "2.25.999", 0.99, "priority", arrived=utcnow())
    second = c.get(nxt.group(1).replace("&amp;", "&"))
    rows2 = re.findall(r'<tr data-exam="([0-9.]+)"', second.text)
    assert rows2 == [f"2.25.{525 + i}" for i in range(5)]  # no repeat, no skip
    assert "Previous page" in second.text
    assert re.findall(r'<tr data-exam="([0-9.]+)"', c.get("/worklist").text)[0] == "2.25.999"
