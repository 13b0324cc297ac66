"""Every web page and action x every role, generated from the app's own UI routes.

Like the API's matrix (tests/api/test_role_matrix.py): the test fails when
- the app has a UI route that is not in ``EXPECTED`` (a new page must be placed in it),
- a route's declared role check differs from the matrix, or a non-public route has none,
- a request without a session is not sent to /login,
- a signed-in role the matrix refuses is not answered 403, or an admitted one is refused.
State-changing requests carry a valid Origin and the session's CSRF token, so what is tested
here is the role alone (CSRF and Origin have their own tests).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.core.security import Role
from service.web.deps import web_operations
from tests.web.conftest import ORIGIN

A, S, AU, SV = Role.admin, Role.staff, Role.auditor, Role.service
ALL = frozenset(Role)
PUBLIC = {("GET", "/login"), ("POST", "/login")}
ADMIN, AUDITOR, JOBS = frozenset({A}), frozenset({AU}), frozenset({A, SV})
READERS = frozenset({S, A})

EXPECTED: dict[tuple[str, str], frozenset[Role]] = {
    ("GET", "/"): ALL,
    ("POST", "/logout"): ALL,
    ("GET", "/jobs"): JOBS,
    ("POST", "/jobs"): JOBS,
    ("GET", "/jobs/{job_id}"): JOBS,
    ("GET", "/jobs/{job_id}/progress"): JOBS,
    ("POST", "/jobs/{job_id}/cancel"): JOBS,
    ("POST", "/jobs/{job_id}/retry"): JOBS,
    ("GET", "/jobs/{job_id}/failures.csv"): JOBS,
    ("GET", "/admin"): ADMIN,
    ("POST", "/admin/ae"): ADMIN,
    ("POST", "/admin/nodes"): ADMIN,
    ("POST", "/admin/nodes/{name}/remove"): ADMIN,
    ("POST", "/admin/nodes/{name}/echo"): ADMIN,
    ("POST", "/admin/allowlist"): ADMIN,
    ("POST", "/admin/allowlist/remove"): ADMIN,
    ("GET", "/admin/health"): ADMIN,
    ("GET", "/admin/policies"): ADMIN,
    ("GET", "/admin/policies/{name}"): ADMIN,
    ("POST", "/admin/policies/validate"): ADMIN,
    ("GET", "/audit"): AUDITOR,
    ("POST", "/audit/mappings"): AUDITOR,
    ("POST", "/audit/reveal"): AUDITOR,
    ("POST", "/audit/find"): AUDITOR,
    ("GET", "/audit/log"): AUDITOR,
    ("GET", "/audit/chain"): AUDITOR,
    ("POST", "/audit/chain/verify"): AUDITOR,
    ("GET", "/audit/instances/{sop_instance_uid}"): AUDITOR,
    ("GET", "/worklist"): READERS,
    ("GET", "/worklist/{exam}"): READERS,
    ("GET", "/worklist/{exam}/views/{sop}.png"): READERS,
    ("POST", "/worklist/{exam}/read"): READERS,
    ("POST", "/worklist/{exam}/reveal"): READERS,
}
# Harmless values: nothing exists under them, so admitted roles change nothing.
PATH_VALUES = {"job_id": "0" * 32, "name": "no-such-node", "sop_instance_uid": "2.25.1",
               "exam": "2.25.999", "sop": "2.25.998"}
LAST = {("POST", "/logout")}  # ends the session: checked after everything else


def _url(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: PATH_VALUES[m.group(1)], path)


def _call(client: TestClient, method: str, path: str, csrf: str | None) -> int:
    headers = dict(ORIGIN)
    if csrf:
        headers["X-CSRF-Token"] = csrf
    data = {} if method == "POST" else None
    return client.request(method, _url(path), headers=headers, data=data).status_code


def test_every_ui_route_is_in_the_matrix_with_its_declared_roles(app: FastAPI) -> None:
    ops = {(m, p): roles for m, p, roles in web_operations(app)}
    assert ops, "no UI routes found"
    unlisted = set(ops) - set(EXPECTED) - PUBLIC
    assert not unlisted, f"UI routes missing from the role matrix: {sorted(unlisted)}"
    missing = set(EXPECTED) - set(ops)
    assert not missing, f"matrix lists routes the app lacks: {sorted(missing)}"
    for key, roles in ops.items():
        if key in PUBLIC:
            assert roles is None, f"{key} is public but carries a role check"
            continue
        assert roles is not None, f"{key} has no role check"
        assert roles == EXPECTED[key], f"{key}: declares {sorted(roles)}"


def test_ui_routes_are_not_in_the_openapi_document(client: TestClient) -> None:
    doc = client.get("/api/v1/openapi.json").json()
    assert all(p.startswith("/api/v1/") for p in doc["paths"])


def test_role_matrix_enforced_by_requests(
    client: TestClient, signed_in: Callable[[Role], tuple[TestClient, str]]
) -> None:
    sessions = {role: signed_in(role) for role in Role}
    checked = 0
    order = sorted(set(EXPECTED) - LAST) + sorted(LAST)
    for method, path in order:
        status = _call(client, method, path, None)
        assert status == 303, f"{method} {path} without a session: {status}"
        assert client.request(method, _url(path), headers=ORIGIN).headers.get(
            "location") == "/login"
        for role in Role:
            c, csrf = sessions[role]
            status = _call(c, method, path, csrf)
            if role in EXPECTED[(method, path)]:
                assert status not in (401, 403), f"{method} {path} refused {role}: {status}"
                assert status < 500, f"{method} {path} as {role}: {status}"
            else:
                assert status == 403, f"{method} {path} admitted {role}: {status}"
            checked += 1
    assert checked == len(EXPECTED) * len(Role)


def test_refusal_page_names_the_role_and_the_allowed_ones(
    signed_in: Callable[[Role], tuple[TestClient, str]]
) -> None:
    c, _ = signed_in(Role.staff)
    for path in ("/admin", "/audit", "/jobs"):
        r = c.get(path)
        assert r.status_code == 403
        assert "Your role (staff) may not open this page" in r.text
        assert r.headers["cache-control"] == "no-store"
