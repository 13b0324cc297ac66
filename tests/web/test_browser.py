"""The web UI in a real browser (Debian's Chromium, headless, through Playwright).

Each page is checked with axe-core for WCAG 2 A/AA violations and photographed into
test-output/web/. The app runs under uvicorn on 127.0.0.1 with a real SQLite database; the
admin scenario runs a whole gateway (listener, Celery worker) against Orthanc.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect
from sqlalchemy import update

from service.core.config import Settings
from service.core.keys import SiteKeys
from service.core.security import Role
from service.db.base import utcnow
from service.db.migrate import upgrade
from service.db.models.web import WebSession
from service.db.session import session_scope
from service.dicom import admin as dicom_admin
from synthetic.exam import Exam, fresh_exam
from tests.peers.net import free_port
from tests.web.browser import (
    PASSWORD,
    Checker,
    add_users,
    sign_in,
    ui_server,
)
from tests.web.seed import deidentify

pytestmark = pytest.mark.integration


class Ui:
    def __init__(self, base: str, settings: Settings, exam: Exam, results: list[Any]) -> None:
        self.base, self.settings, self.exam, self.results = base, settings, exam, results


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ui]:
    tmp = tmp_path_factory.mktemp("ui")
    settings = Settings(home=tmp / "home", database_url=f"sqlite:///{tmp / 'ui.db'}",
                        environment="development")
    settings.ensure_dirs()
    upgrade(settings.db_url)
    add_users(settings.db_url)
    exam = fresh_exam(tmp / "exam", index=7)
    results = deidentify(settings, SiteKeys.for_settings(settings), exam)
    with ui_server(settings) as base:
        yield Ui(base, settings, exam, results)


def test_sign_in_page_keyboard_and_staff_refused(ui: Ui, page: tuple[Any, Checker]) -> None:
    pg, check = page
    pg.goto(f"{ui.base}/login")
    check.page(pg, "login")
    expect(pg.get_by_label("User name")).to_be_focused()  # autofocus: type straight away
    pg.get_by_label("User name").fill("ui-staff")
    pg.get_by_label("Password", exact=True).fill("wrong password here")
    pg.keyboard.press("Enter")
    expect(pg.get_by_role("alert")).to_contain_text("Wrong user name or password")
    check.page(pg, "login-failed")
    sign_in(pg, ui.base, "ui-staff", PASSWORD[Role.staff])
    expect(pg.get_by_role("heading", level=1)).to_contain_text("Worklist")  # staff's first page
    check.page(pg, "home-staff")
    pg.keyboard.press("Tab")  # the first stop is the skip link, visible when focused
    skip = pg.get_by_role("link", name="Skip to main content")
    expect(skip).to_be_focused()
    box = skip.bounding_box()
    assert box is not None and box["y"] >= 0
    pg.keyboard.press("Enter")
    expect(pg.locator("#main")).to_be_focused()
    for path in ("/admin", "/audit", "/jobs"):
        response = pg.goto(f"{ui.base}{path}")
        assert response is not None and response.status == 403
        expect(pg.get_by_role("alert")).to_contain_text("Your role (staff) may not open")
    check.page(pg, "refused-staff")
    nav = pg.get_by_role("navigation", name="Main")
    assert nav.get_by_role("link").all_inner_texts() == ["Worklist"]  # staff's one page


def test_auditor_searches_reveals_finds_it_logged_and_verifies(
    ui: Ui, page: tuple[Any, Checker]
) -> None:
    pg, check = page
    sign_in(pg, ui.base, "ui-auditor", PASSWORD[Role.auditor])
    assert pg.url.endswith("/audit")
    check.page(pg, "audit")
    patient = str(ui.results[0].patient_pseudonym)
    history = pg.evaluate("history.length")
    pg.get_by_label("Pseudonym (patient pseudonym").fill(patient)
    pg.get_by_role("button", name="Search").click()
    expect(pg.locator("#mapping-result")).to_contain_text("11 mappings")
    check.page(pg, "audit-search")
    pg.get_by_role("link", name="What was done to it").first.click()
    expect(pg.get_by_role("heading", level=1)).to_contain_text("What de-identification did")
    expect(pg.locator("main")).to_contain_text("PatientID")
    assert ui.exam.patient_id not in pg.content()
    check.page(pg, "audit-instance")
    pg.goto(f"{ui.base}/audit")
    history = pg.evaluate("history.length")
    pg.locator("#reveal-pseudonym").fill(patient)
    pg.locator("#reveal-reason").fill("TICKET-4711 follow-up")
    pg.get_by_role("button", name="Re-identify").click()  # the confirmation is required
    assert pg.locator("#reveal-result [data-original]").count() == 0
    pg.get_by_label("I confirm this re-identification").check()
    pg.get_by_role("button", name="Re-identify").click()
    expect(pg.locator("#reveal-result")).to_contain_text(ui.exam.patient_id)
    assert pg.url == f"{ui.base}/audit"  # nothing in the URL or the history
    assert pg.evaluate("history.length") == history
    assert pg.evaluate("JSON.stringify(localStorage)") == "{}"  # htmx kept no page copy
    assert ui.exam.patient_id not in pg.title()
    check.page(pg, "audit-reveal")
    pg.get_by_role("link", name="Re-identification log").click()
    row = pg.locator("tbody tr").first
    expect(row).to_contain_text("TICKET-4711 follow-up")
    expect(row).to_contain_text("user:ui-auditor")
    expect(row).to_contain_text(patient)
    check.page(pg, "audit-log")
    pg.get_by_role("link", name="Audit chain").click()
    pg.get_by_role("button", name="Verify the audit chain").click()
    expect(pg.locator("#verify-result")).to_contain_text("The audit chain is intact")
    check.page(pg, "audit-chain")


def test_csrf_and_foreign_origin_are_refused_in_the_browser(
    ui: Ui, page: tuple[Any, Checker], tmp_path: Path
) -> None:
    pg, check = page
    sign_in(pg, ui.base, "ui-admin", PASSWORD[Role.admin])
    pg.goto(f"{ui.base}/admin")
    post = """async ([url, token]) => {
        const body = new URLSearchParams({ae_title: "NOPE"});
        const headers = token === null ? {} : {"X-CSRF-Token": token};
        const r = await fetch(url, {method: "POST", body, headers});
        return r.status; }"""
    url = f"{ui.base}/admin/allowlist"
    assert pg.evaluate(post, [url, None]) == 403
    assert pg.evaluate(post, [url, "forged-token"]) == 403
    (tmp_path / "evil.html").write_text(
        f'<!doctype html><title>x</title><form method="post" action="{url}">'
        '<input name="ae_title" value="EVIL"><button>win a prize</button></form>')
    evil = ThreadingHTTPServer(("127.0.0.1", free_port()),
                               partial(SimpleHTTPRequestHandler, directory=str(tmp_path)))
    threading.Thread(target=evil.serve_forever, daemon=True).start()
    try:
        pg.goto(f"http://127.0.0.1:{evil.server_address[1]}/evil.html")
        with pg.expect_navigation():
            pg.get_by_role("button", name="win a prize").click()
        assert "Origin check" in pg.content()
    finally:
        evil.shutdown()
    with session_scope(ui.settings.db_url) as s:
        assert [a.ae_title for a in dicom_admin.list_allowed(s)] == []
    assert not check.csp_errors


def test_revoked_and_expired_sessions_are_refused(ui: Ui, page: tuple[Any, Checker]) -> None:
    pg, _ = page
    for change in ({"revoked_at": utcnow()}, {"expires_at": utcnow() - timedelta(seconds=1)},
                   {"last_seen_at": utcnow() - timedelta(hours=2)}):
        sign_in(pg, ui.base, "ui-service", PASSWORD[Role.service])
        assert pg.url.endswith("/jobs")
        with session_scope(ui.settings.db_url) as s:
            s.execute(update(WebSession).where(WebSession.revoked_at.is_(None)).values(**change))
        pg.reload()
        assert pg.url.endswith("/login"), change
    sign_in(pg, ui.base, "ui-service", PASSWORD[Role.service])
    pg.get_by_role("button", name="Sign out").click()
    assert pg.url.endswith("/login")
    pg.go_back()  # no-store: the browser asks again and is sent to sign in
    assert pg.url.endswith("/login")


def test_admin_adds_node_echoes_it_and_a_job_reaches_done(
    tmp_path: Path, page: tuple[Any, Checker]
) -> None:
    from tests.e2e.harness import gateway, make_settings

    pg, check = page
    st = make_settings(tmp_path, db_url=f"sqlite:///{tmp_path / 'gw.db'}")
    with gateway(tmp_path, st, n_exams=2) as gw:
        add_users(st.db_url)
        base = gw.emb.api_url
        assert base is not None
        sign_in(pg, base, "ui-admin", PASSWORD[Role.admin])
        pg.goto(f"{base}/admin")
        check.page(pg, "admin")
        pg.get_by_label("Name", exact=True).fill("orthanc-ui")
        pg.locator("#node-ae").fill(gw.orthanc.ae_title)
        pg.locator("#node-host").fill("127.0.0.1")
        pg.locator("#node-port").fill(str(gw.orthanc.dicom_port))
        pg.get_by_role("button", name="Add node").click()
        expect(pg.get_by_role("status").first).to_contain_text("PACS node added")
        pg.get_by_role("button", name="Echo orthanc-ui").click()
        result = pg.locator(".echo-result").filter(has_text="Echo")
        expect(result).to_contain_text(re.compile(r"Echo OK: [0-9.]+ ms round trip"))
        # a node nobody listens on: the exact failure, not a generic error
        pg.get_by_label("Name", exact=True).fill("nobody")
        pg.locator("#node-ae").fill("NOBODY")
        pg.locator("#node-host").fill("127.0.0.1")
        pg.locator("#node-port").fill(str(free_port()))
        pg.get_by_role("button", name="Add node").click()
        pg.get_by_role("button", name="Echo nobody").click()
        expect(pg.locator(".echo-result").filter(has_text="failed")).to_contain_text(
            re.compile(r"Echo failed \((refused|unreachable)\)"))
        check.page(pg, "admin-echo")
        pg.get_by_role("link", name="Queues and workers").click()
        expect(pg.get_by_role("heading", name="Work per node")).to_be_visible()
        check.page(pg, "admin-health")
        pg.get_by_role("link", name="Policies").click()
        bad = tmp_path / "bad-policy.yaml"
        bad.write_text("name: broken\nversion: '1'\nrules:\n  - keyword: PatientName\n"
                       "    action: obliterate\n  - kewyord: PatientID\n    action: remove\n")
        pg.get_by_label("Policy YAML file").set_input_files(str(bad))
        pg.get_by_role("button", name="Check policy").click()
        problems = pg.locator("#validation")
        expect(problems).to_contain_text("problem")
        expect(problems.locator("tbody tr").first.locator("td").first).to_have_text(
            re.compile(r"^[0-9]+$"))
        check.page(pg, "admin-policy-check")
        pg.get_by_role("link", name="mammography-screening").click()
        check.page(pg, "admin-policy")

        pg.get_by_role("link", name="Jobs").click()
        pg.get_by_label("PACS").select_option("orthanc")
        pg.get_by_label("Values").fill("\n".join(e.accession for e in gw.exams))
        pg.get_by_role("button", name="Submit job").click()
        assert re.search(r"/jobs/[A-Za-z0-9_-]+$", pg.url), pg.url
        assert not any(e.accession in pg.url for e in gw.exams)
        bar = pg.locator('[role="progressbar"][data-stage="deidentified"]')
        expect(bar).to_have_attribute("aria-valuemax", "8", timeout=90_000)
        expect(pg.locator("[data-state]")).to_have_attribute("data-state", "done",
                                                            timeout=120_000)
        expect(bar).to_have_attribute("aria-valuenow", "8")
        # the page reloaded itself once the job ended: final study table, no Cancel button
        expect(pg.locator("tbody tr")).to_have_count(2)
        expect(pg.get_by_role("button", name="Cancel job")).to_have_count(0)
        expect(pg.get_by_role("button", name="Retry failed parts")).to_be_visible()
        check.page(pg, "job-done")
        polls: list[str] = []
        pg.on("request", lambda r: polls.append(r.url) if "/progress" in r.url else None)
        time.sleep(7)  # two polling periods: a finished job is no longer polled
        assert polls == []
        csv = pg.request.get(pg.url + "/failures.csv")
        assert csv.status == 200 and csv.text().startswith("study_index,study_uid,state")
        pg.get_by_role("link", name="All jobs").click()
        check.page(pg, "jobs")
    assert {"admin", "admin-health", "job-done", "jobs"} <= set(check.checked)
