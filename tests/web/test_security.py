"""CSRF, Origin, headers and cookies: each measure refuses what it is for, on real requests."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient

from service.core.config import Settings
from service.core.security import Role
from service.db.session import session_scope
from service.dicom import admin as dicom_admin
from tests.web.conftest import BASE, ORIGIN, PASSWORDS, form_csrf

SignedIn = Callable[[Role], tuple[TestClient, str]]


def _allowed(settings: Settings) -> list[str]:
    with session_scope(settings.db_url) as s:
        return [a.ae_title for a in dicom_admin.list_allowed(s)]


def _altered(token: str) -> str:
    """The token with one character in the middle changed (never the same token: the last
    base64 character may carry padding bits, and replacing a character by itself is no change)."""
    i = len(token) // 2
    return token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1:]


def test_csrf_missing_wrong_or_foreign_token_is_refused(signed_in: SignedIn,
                                                        settings: Settings) -> None:
    admin, token = signed_in(Role.admin)
    _, other_token = signed_in(Role.admin)  # a second session of the same account
    for data, headers in (
        ({"ae_title": "NOCSRF"}, ORIGIN),
        ({"ae_title": "WRONG", "csrf_token": "x" * 43}, ORIGIN),
        ({"ae_title": "OTHER", "csrf_token": other_token}, ORIGIN),
        ({"ae_title": "HDR"}, {**ORIGIN, "X-CSRF-Token": _altered(token)}),
    ):
        r = admin.post("/admin/allowlist", data=data, headers=headers)
        assert r.status_code == 403, data
        assert "security token is missing or out of date" in r.text
    assert _allowed(settings) == []
    r = admin.post("/admin/allowlist", data={"ae_title": "GOOD", "csrf_token": token},
                   headers=ORIGIN)
    assert r.status_code == 303
    r = admin.post("/admin/allowlist", data={"ae_title": "HTMX"},
                   headers={**ORIGIN, "X-CSRF-Token": token, "HX-Request": "true"})
    assert r.status_code == 303
    assert _allowed(settings) == ["GOOD", "HTMX"]


def test_foreign_missing_or_null_origin_is_refused(signed_in: SignedIn,
                                                   settings: Settings) -> None:
    admin, token = signed_in(Role.admin)
    for headers in ({"Origin": "https://evil.example"}, {"Origin": "null"},
                    {"Origin": "http://testserver.evil.example"},
                    {"Referer": "https://evil.example/admin"}, {}):
        r = admin.post("/admin/allowlist", data={"ae_title": "EVIL", "csrf_token": token},
                       headers=headers)
        assert r.status_code == 403, headers
        assert "Origin check" in r.text
    assert _allowed(settings) == []
    r = admin.post("/admin/allowlist", data={"ae_title": "REF", "csrf_token": token},
                   headers={"Referer": f"{BASE}/admin"})  # no Origin: the Referer decides
    assert r.status_code == 303
    assert _allowed(settings) == ["REF"]


def test_the_api_needs_no_origin(client: TestClient) -> None:
    """Bearer-token API calls come from scripts; the Origin check is for cookie sessions."""
    assert client.post("/api/v1/jobs", json={}).status_code == 401


def test_sign_in_form_is_csrf_protected(client: TestClient, users: dict[Role, str]) -> None:
    page = client.get("/login")
    good = form_csrf(page.text)
    for token in ("", "forged"):
        r = client.post("/login", headers=ORIGIN, data={
            "name": users[Role.admin], "password": PASSWORDS[Role.admin], "csrf_token": token})
        assert r.status_code == 403
        assert "form had expired" in r.text
    fresh = TestClient(client.app, base_url=BASE, follow_redirects=False)  # no pre-cookie
    r = fresh.post("/login", headers=ORIGIN, data={
        "name": users[Role.admin], "password": PASSWORDS[Role.admin], "csrf_token": good})
    assert r.status_code == 403
    r = client.post("/login", headers=ORIGIN, data={
        "name": users[Role.admin], "password": PASSWORDS[Role.admin], "csrf_token": good})
    assert r.status_code == 303


def test_headers_on_pages_static_and_docs(signed_in: SignedIn, client: TestClient) -> None:
    admin, _ = signed_in(Role.admin)
    for path in ("/admin", "/jobs", "/login"):
        r = (admin if path != "/login" else client).get(path)
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "style-src 'self'" in csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert "frame-ancestors 'none'" in csp
        assert r.headers["cache-control"] == "no-store"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["strict-transport-security"].startswith("max-age=")
        assert "<script>" not in r.text and " style=" not in r.text and "<style" not in r.text
        assert " on" not in "".join(part.split(">")[0] for part in r.text.split("<")
                                    if part.startswith(("button", "form", "a ", "input")))
    r = client.get("/static/app.js")
    assert r.status_code == 200 and "no-store" not in r.headers.get("cache-control", "")
    assert client.get("/static/htmx.min.js").status_code == 200
    assert "content-security-policy" not in client.get("/docs").headers


def test_cookies_are_host_only_secure_httponly_strict(client: TestClient,
                                                      users: dict[Role, str]) -> None:
    page = client.get("/login")
    r = client.post("/login", headers=ORIGIN, data={
        "name": users[Role.staff], "password": PASSWORDS[Role.staff],
        "csrf_token": form_csrf(page.text)})
    cookies = r.headers.get_list("set-cookie")
    session = next(c for c in cookies if c.startswith("__Host-deidgate_session="))
    flags = {p.strip().lower() for p in session.split(";")[1:]}
    assert {"httponly", "secure", "samesite=strict", "path=/"} <= flags
    assert not any(f.startswith(("domain", "max-age", "expires")) for f in flags)


def test_development_cookies_work_over_http(settings: Settings, migrated_db: str,
                                            users: dict[Role, str]) -> None:
    from service.api.app import create_app

    settings.environment = "development"
    c = TestClient(create_app(settings), base_url="http://127.0.0.1:8080",
                   follow_redirects=False)
    page = c.get("/login")
    r = c.post("/login", headers={"Origin": "http://127.0.0.1:8080"}, data={
        "name": users[Role.staff], "password": PASSWORDS[Role.staff],
        "csrf_token": form_csrf(page.text)})
    session = next(h for h in r.headers.get_list("set-cookie")
                   if h.startswith("deidgate_session="))
    assert "secure" not in session.lower() and "httponly" in session.lower()
    assert "strict-transport-security" not in r.headers
    home = c.get("/", follow_redirects=True)  # staff land on their worklist
    assert home.status_code == 200 and home.url.path == "/worklist"


def test_no_phi_in_redirects_titles_or_urls_of_a_job_submission(
    signed_in: SignedIn, settings: Settings
) -> None:
    with session_scope(settings.db_url) as s:
        dicom_admin.add_node(s, "pacs1", ae_title="PACS1", host="127.0.0.1", port=1)
    coord, token = signed_in(Role.service)
    r = coord.post("/jobs", headers=ORIGIN, data={
        "csrf_token": token, "pacs": "pacs1", "selector": "accession_numbers",
        "values": "ACC-SECRET-1\nACC-SECRET-2"})
    assert r.status_code == 303
    location = r.headers["location"]
    assert "SECRET" not in location and location.startswith("/jobs/")
    detail = coord.get(location)
    assert detail.status_code == 200
    assert "ACC-SECRET" not in detail.text
    assert "<title>Job · deidgate</title>" in detail.text
