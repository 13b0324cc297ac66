"""Every endpoint x every role, generated from the app's own routes.

``EXPECTED`` is the role matrix as designed. The test fails when
- the app has an operation that is not in the matrix (a new route must be placed in it),
- a route's declared role check differs from the matrix, or it has none,
- a request with a token of a refused role is not answered 403, or one of an admitted role is
  answered 401/403 (the check is proven by real requests, not only by inspection),
- a request without a token is not answered 401.
"""

from __future__ import annotations

import re

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.api.deps import api_operations
from service.core.security import Role
from tests.api.conftest import bearer

A, S, AU, SV = Role.admin, Role.staff, Role.auditor, Role.service
ALL = frozenset(Role)
PUBLIC = {("GET", "/api/v1/health")}

EXPECTED: dict[tuple[str, str], frozenset[Role]] = {
    ("GET", "/api/v1/auth/me"): ALL,
    # jobs: services and admins act; every role may read PHI-free job views
    ("POST", "/api/v1/jobs"): frozenset({SV, A}),
    ("GET", "/api/v1/jobs"): ALL,
    ("GET", "/api/v1/jobs/{job_id}"): ALL,
    ("POST", "/api/v1/jobs/{job_id}/cancel"): frozenset({SV, A}),
    ("POST", "/api/v1/jobs/{job_id}/retry"): frozenset({SV, A}),
    ("GET", "/api/v1/jobs/{job_id}/dead-letters"): ALL,
    ("GET", "/api/v1/dead-letters"): ALL,
    ("POST", "/api/v1/dead-letters/{dead_letter_id}/retry"): frozenset({SV, A}),
    # triage: the screening readers (and admins)
    ("GET", "/api/v1/triage/worklist"): frozenset({S, A}),
    ("GET", "/api/v1/triage/exams/{exam}"): frozenset({S, A}),
    ("POST", "/api/v1/triage/exams/{exam}/read"): frozenset({S, A}),
    ("POST", "/api/v1/triage/exams/{exam}/reveal"): frozenset({S, A}),
    # DICOM edge administration: admins only
    ("GET", "/api/v1/admin/ae"): frozenset({A}),
    ("PATCH", "/api/v1/admin/ae"): frozenset({A}),
    ("GET", "/api/v1/admin/nodes"): frozenset({A}),
    ("POST", "/api/v1/admin/nodes"): frozenset({A}),
    ("GET", "/api/v1/admin/nodes/{name}"): frozenset({A}),
    ("PUT", "/api/v1/admin/nodes/{name}"): frozenset({A}),
    ("DELETE", "/api/v1/admin/nodes/{name}"): frozenset({A}),
    ("POST", "/api/v1/admin/nodes/{name}/echo"): frozenset({A}),
    ("GET", "/api/v1/admin/allowlist"): frozenset({A}),
    ("POST", "/api/v1/admin/allowlist"): frozenset({A}),
    ("DELETE", "/api/v1/admin/allowlist/{calling_ae}"): frozenset({A}),
    # audit: auditors; admins may only see whether the chain verifies
    ("GET", "/api/v1/audit/mappings/{pseudonym}"): frozenset({AU}),
    ("GET", "/api/v1/audit/patients/{pseudonym}/mappings"): frozenset({AU}),
    ("POST", "/api/v1/audit/lookup"): frozenset({AU}),
    ("GET", "/api/v1/audit/reidentifications"): frozenset({AU}),
    ("GET", "/api/v1/audit/events"): frozenset({AU}),
    ("GET", "/api/v1/audit/chain"): frozenset({AU, A}),
}

# Harmless values for path parameters: nothing exists under them, so admitted roles get a
# 404/409/422 rather than changing anything; refused roles must get 403 before any of that.
PATH_VALUES = {
    "job_id": "0" * 32,
    "dead_letter_id": "999999",
    "pseudonym": "PSEUDONYM-THAT-DOES-NOT-EXIST",
    "name": "no-such-node",
    "calling_ae": "NOSUCHAE",
    "exam": "2.25.999999999",
}


def _url(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: PATH_VALUES[m.group(1)], path)


def _call(client: TestClient, method: str, path: str, headers: dict[str, str]) -> int:
    kwargs: dict[str, object] = {"headers": headers}
    if method in ("POST", "PUT", "PATCH"):
        kwargs["json"] = {}
    return client.request(method, _url(path), **kwargs).status_code  # type: ignore[arg-type]


def test_every_operation_is_in_the_matrix_with_its_declared_roles(app: FastAPI) -> None:
    ops = {(m, p): roles for m, p, roles in api_operations(app) if p.startswith("/api/v1")}
    unlisted = set(ops) - set(EXPECTED) - PUBLIC
    assert not unlisted, f"routes missing from the role matrix: {sorted(unlisted)}"
    missing = set(EXPECTED) - set(ops)
    assert not missing, f"matrix lists routes the app lacks: {sorted(missing)}"
    for key, roles in ops.items():
        if key in PUBLIC:
            assert roles is None, f"{key} is public but carries a role check"
            continue
        assert roles is not None, f"{key} has no role check"
        assert roles == EXPECTED[key], f"{key}: declares {sorted(roles)}"


def test_role_matrix_enforced_by_requests(
    app: FastAPI, client: TestClient, tokens: dict[Role, str]
) -> None:
    checked = 0
    for method, path, _ in api_operations(app):
        if (method, path) in PUBLIC or (method, path) not in EXPECTED:
            continue
        assert _call(client, method, path, {}) == 401, f"{method} {path} without token"
        for role in Role:
            status = _call(client, method, path, bearer(tokens[role]))
            if role in EXPECTED[(method, path)]:
                assert status not in (401, 403), f"{method} {path} refused {role}: {status}"
                assert status < 500, f"{method} {path} as {role}: {status}"
            else:
                assert status == 403, f"{method} {path} admitted {role}: {status}"
            checked += 1
    assert checked == len(EXPECTED) * len(Role)


def test_refusal_bodies_name_the_role_and_never_the_token(
    client: TestClient, tokens: dict[Role, str]
) -> None:
    r = client.get("/api/v1/triage/worklist", headers=bearer(tokens[Role.auditor]))
    assert r.status_code == 403
    body = r.json()
    assert body["error"]["code"] == "forbidden"
    assert "'auditor'" in body["error"]["message"]
    assert "admin, staff" in body["error"]["message"]
    assert tokens[Role.auditor] not in r.text


@pytest.mark.parametrize("method,path", sorted(PUBLIC))
def test_public_routes_need_no_token(client: TestClient, method: str, path: str) -> None:
    assert client.request(method, path).status_code == 200
