"""Screening staff in a real browser (Debian's Chromium through Playwright): sign in, see the
ranked worklist with thumbnails, move through it with the keyboard (j/k), mark an exam read
(r), open one (Enter), reveal its accession number with a reason and a confirmation; and a staff
user is refused the auditor and admin pages. axe (WCAG 2 A/AA) and the CSP check run on every
page; screenshots go to test-output/web/."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from playwright.sync_api import expect

from service.audit.store import AuditStore
from service.core.config import Settings
from service.core.keys import SiteKeys
from service.core.security import Role
from service.db.base import utcnow
from service.db.migrate import upgrade
from service.db.models.triage import TriageEntry
from service.db.session import session_scope
from synthetic.exam import Exam, fresh_exam
from tests.triage.seed import add_deidentified
from tests.web.browser import (
    PASSWORD,
    Checker,
    add_users,
    sign_in,
    ui_server,
)
from tests.web.seed import deidentify

pytestmark = pytest.mark.integration

# (score, category, waited, per-view scores): the third has waited past the 3-day ceiling
PLAN = [
    (0.91, "priority", timedelta(hours=3), (0.91, 0.22, 0.87, 0.18)),
    (0.47, "standard", timedelta(hours=6), (0.47, 0.31, 0.40, 0.29)),
    (0.06, "likely-normal", timedelta(days=4), (0.06, 0.05, 0.04, 0.06)),
    (0.12, "likely-normal", timedelta(minutes=20), (0.12, 0.10, 0.09, 0.11)),
]


@dataclass
class Staffed:
    base: str
    settings: Settings
    exams: list[tuple[str, Exam]]  # (pseudonymous exam UID, the original exam), in PLAN order


@pytest.fixture(scope="module")
def staffed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Staffed]:
    tmp = tmp_path_factory.mktemp("worklist-ui")
    settings = Settings(home=tmp / "home", database_url=f"sqlite:///{tmp / 'ui.db'}",
                        environment="development")
    settings.ensure_dirs()
    upgrade(settings.db_url)
    add_users(settings.db_url)
    keys = SiteKeys.for_settings(settings)
    now = utcnow()
    exams = []
    for i, (score, category, waited, views) in enumerate(PLAN):
        exam = fresh_exam(tmp / f"exam{i}", index=60 + i, rows=320, cols=256)
        files = [r.out_path for r in deidentify(settings, keys, exam) if r.out_path]
        with session_scope(settings.db_url) as s:
            uid = add_deidentified(s, settings.output_dir, files, score, category,
                                   arrived=now - waited, view_scores=views).exam
        exams.append((uid, exam))
    with ui_server(settings) as base:
        yield Staffed(base, settings, exams)


def _images_loaded(pg: Any) -> list[int]:
    return pg.evaluate("Array.from(document.querySelectorAll('main img'))"
                       ".map(i => i.complete ? i.naturalWidth : -1)")


def test_staff_triages_with_the_keyboard_marks_read_and_reveals(
    staffed: Staffed, page: tuple[Any, Checker]
) -> None:
    pg, check = page
    uids = [u for u, _ in staffed.exams]
    sign_in(pg, staffed.base, "ui-staff", PASSWORD[Role.staff])
    pg.get_by_role("navigation", name="Main").get_by_role("link", name="Worklist").click()
    assert pg.url == f"{staffed.base}/worklist"
    rows = pg.locator("table.worklist tbody tr")
    expect(rows).to_have_count(4)
    # the 4-day wait first (over the ceiling), then by score
    assert [rows.nth(i).get_attribute("data-exam") for i in range(4)] == [
        uids[2], uids[0], uids[1], uids[3]]
    expect(rows.first).to_contain_text("Over maximum wait")
    expect(pg.locator(".ceiling")).to_contain_text("Maximum wait 3 d")
    expect(rows.nth(1).locator(".badge.cat-priority")).to_have_text("Priority")
    expect(pg.locator(".demo-banner")).to_contain_text("synthetic demo model")
    pg.wait_for_load_state("networkidle")
    widths = _images_loaded(pg)
    assert len(widths) == 16 and min(widths) > 0, widths  # every thumbnail rendered
    check.page(pg, "worklist")

    # keyboard: j, j, k lands on the first row; r marks it read in place
    pg.keyboard.press("j")
    pg.keyboard.press("j")
    expect(rows.nth(1).locator("a.exam-link")).to_be_focused()
    pg.keyboard.press("k")
    expect(rows.first.locator("a.exam-link")).to_be_focused()
    expect(rows.first).to_have_class(re.compile(r"\bselected\b"))
    pg.keyboard.press("r")
    expect(rows.first.locator(".state-cell")).to_contain_text("Read by user:ui-staff")
    expect(pg.locator("#worklist-status")).to_contain_text("marked read")
    with session_scope(staffed.settings.db_url) as s:
        entry = s.query(TriageEntry).filter(TriageEntry.exam == uids[2]).one()
        assert entry.read_by == "user:ui-staff" and entry.read_at is not None
    check.page(pg, "worklist-read")

    # j to the priority exam, Enter opens it
    pg.keyboard.press("j")
    pg.keyboard.press("Enter")
    pg.wait_for_url(f"{staffed.base}/worklist/{uids[0]}")
    expect(pg.get_by_role("heading", level=1)).to_have_text("Exam")
    expect(pg.locator("main")).to_contain_text("synthetic demo model — not for clinical use")
    figures = pg.locator("ul.views figure")
    expect(figures).to_have_count(4)
    expect(figures.first).to_contain_text("R CC · score 0.910")
    pg.wait_for_load_state("networkidle")
    widths = _images_loaded(pg)
    assert len(widths) == 4 and min(widths) > 0, widths
    check.page(pg, "exam")

    # reveal: the confirmation is required; then the number, on record, not in the URL
    history = pg.evaluate("history.length")
    pg.locator("#reveal-reason").fill("recall ticket 4711 follow-up")
    pg.get_by_role("button", name="Reveal accession number").click()
    assert pg.locator("[data-accession]").count() == 0  # the browser asks for the checkbox
    pg.get_by_label("I confirm the accession number is needed").check()
    pg.get_by_role("button", name="Reveal accession number").click()
    accession = staffed.exams[0][1].accession
    expect(pg.locator("[data-accession]")).to_have_text(accession)
    assert pg.url == f"{staffed.base}/worklist/{uids[0]}"
    assert pg.evaluate("history.length") == history
    assert accession not in pg.title()
    assert pg.evaluate("JSON.stringify(localStorage)") == "{}"
    with session_scope(staffed.settings.db_url) as s:
        events = AuditStore(s, SiteKeys.for_settings(staffed.settings)).reidentifications()
    assert [(e.actor, (e.details or {}).get("reason")) for e in events] == [
        ("user:ui-staff", "recall ticket 4711 follow-up")]
    check.page(pg, "exam-revealed")

    # mark read from the exam page
    pg.get_by_role("button", name="Mark read").click()
    expect(pg.locator("#exam-state")).to_contain_text("Read by user:ui-staff")
    for _, exam in staffed.exams:
        for value in (exam.patient_id, exam.study_uid, exam.patient_name):
            assert value not in pg.content()

    # a staff user is refused the auditors' and administrators' pages
    for path in ("/audit", "/admin", "/audit/log"):
        response = pg.goto(f"{staffed.base}{path}")
        assert response is not None and response.status == 403
        expect(pg.get_by_role("alert")).to_contain_text("Your role (staff) may not open")
    assert {"worklist", "worklist-read", "exam", "exam-revealed"} <= set(check.checked)
