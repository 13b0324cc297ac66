"""The OpenAPI document is a contract a client can hold the app to (what schemathesis found).

- every status an operation answers is documented for it, found by requests generated from
  the routes (each role, no token, invalid input, the database gone);
- integers beyond what the database holds are a 422 naming the field, not a 500;
- 405 answers name every method the path has in ``Allow``;
- a body FastAPI cannot decode is the same 422 as malformed JSON;
- what a request schema admits the server accepts, and what it refuses the server refuses
  (property-based, against the document's own JSON Schema);
- a PACS node whose host does not resolve echoes "unreachable" (200), not a 500.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from service.api.app import create_app
from service.api.deps import api_operations
from service.api.schemas import AllowedIn, LocalAEUpdate, LookupRequest, NodeCreate, RevealRequest
from service.core.config import Settings
from service.core.security import Role
from service.jobs.schemas import JobRequest
from tests.api.conftest import bearer
from tests.api.test_role_matrix import PATH_VALUES

OPENAPI = "/api/v1/openapi.json"
# Path values that break every path parameter's pattern or type.
BAD_PATH = {"job_id": "bad^id", "dead_letter_id": "x", "pseudonym": "bad^p", "name": "-bad",
            "calling_ae": "A\\B", "exam": "2.25.x"}


@pytest.fixture()
def db_url(tmp_path: Path) -> str:
    """SQLite: these are contract checks above the database (test_fuzz runs both back-ends)."""
    return f"sqlite:///{tmp_path / 'deidgate.db'}"


def _documented(doc: dict[str, Any], method: str, path: str) -> set[int]:
    return {int(s) for s in doc["paths"][path][method.lower()]["responses"]}


def _operations(app: FastAPI, doc: dict[str, Any]) -> list[tuple[str, str]]:
    """The API's operations (the web UI's routes are outside the document)."""
    ops = [(m, p) for m, p, _ in api_operations(app) if m.lower() in doc["paths"].get(p, {})]
    assert len(ops) >= 28
    return ops


def _url(path: str, values: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)


def _requests(method: str, path: str) -> list[dict[str, Any]]:
    """A harmless request, and invalid ones: bad path values, an empty body, a broken body."""
    out: list[dict[str, Any]] = [{"url": _url(path, PATH_VALUES)}]
    if "{" in path:
        out.append({"url": _url(path, BAD_PATH)})
    if method in ("POST", "PUT", "PATCH"):
        out += [{"url": _url(path, PATH_VALUES), "json": {}},
                {"url": _url(path, PATH_VALUES), "content": b"\xff\xfe{",
                 "headers": {"Content-Type": "application/json"}}]
    if method == "GET":
        out.append({"url": _url(path, PATH_VALUES) + "?limit=0&offset=-1"})
    return out


def test_every_status_answered_is_documented(
    app: FastAPI, client: TestClient, tokens: dict[Role, str]
) -> None:
    doc = client.get(OPENAPI).json()
    seen: set[int] = set()
    for method, path in _operations(app, doc):
        documented = _documented(doc, method, path)
        for auth in [{}, *(bearer(tokens[r]) for r in Role)]:
            for req in _requests(method, path):
                headers = {**auth, **req.pop("headers", {})}
                r = client.request(method, **req, headers=headers)
                assert r.status_code in documented, (method, path, r.status_code, r.text)
                seen.add(r.status_code)
    # The requests reach each kind of answer (201, 204 and 409 come from test_fuzz's runs).
    assert {200, 401, 403, 404, 422} <= seen


def test_database_down_is_a_documented_503(
    settings: Settings, tokens: dict[Role, str], tmp_path: Path
) -> None:
    gone = settings.model_copy(update={"database_url": f"sqlite:///{tmp_path}/no/such/dir/db"})
    app = create_app(gone)
    with TestClient(app, raise_server_exceptions=False) as client:
        doc = client.get(OPENAPI).json()
        for method, path in _operations(app, doc):
            r = client.request(method, _url(path, PATH_VALUES), headers=bearer(tokens[Role.admin]))
            assert r.status_code == 503, (method, path, r.text)
            assert 503 in _documented(doc, method, path), (method, path)


@pytest.mark.parametrize(
    "url,field",
    [
        ("/api/v1/jobs?offset=99999999999999999999", "query offset"),
        ("/api/v1/jobs?offset=9223372036854775808", "query offset"),
        ("/api/v1/triage/worklist?offset=99999999999999999999", "query offset"),
    ],
)
def test_offset_beyond_int64_is_422_naming_it(
    client: TestClient, tokens: dict[Role, str], url: str, field: str
) -> None:
    r = client.get(url, headers=bearer(tokens[Role.admin]))
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "invalid-request"
    assert r.json()["error"]["message"].startswith(field)
    assert "99999" not in r.text and "9223372036854775808" not in r.text  # never echoed


def test_largest_offset_answers_an_empty_page(client: TestClient, tokens: dict[Role, str]) -> None:
    r = client.get(f"/api/v1/jobs?offset={2**63 - 1}", headers=bearer(tokens[Role.admin]))
    assert r.status_code == 200 and r.json()["items"] == []


@pytest.mark.parametrize("value", [str(2**31), str(2**63), "99999999999999999999"])
def test_dead_letter_id_beyond_the_column_is_422(
    client: TestClient, tokens: dict[Role, str], value: str
) -> None:
    r = client.post(f"/api/v1/dead-letters/{value}/retry", headers=bearer(tokens[Role.admin]))
    assert r.status_code == 422, r.text
    assert r.json()["error"]["message"].startswith("path dead_letter_id")


@pytest.mark.parametrize(
    "method,path,allow",
    [
        ("DELETE", "/api/v1/jobs", "GET, POST"),
        ("OPTIONS", "/api/v1/admin/ae", "GET, PATCH"),
        ("PATCH", "/api/v1/admin/nodes/pacs1", "DELETE, GET, PUT"),
        ("GET", "/api/v1/jobs/abc/cancel", "POST"),
        ("DELETE", "/api/v1/health", "GET"),
    ],
)
def test_405_allow_names_every_method_of_the_path(
    client: TestClient, method: str, path: str, allow: str
) -> None:
    r = client.request(method, path)
    assert r.status_code == 405
    assert r.headers["Allow"] == allow
    assert r.json() == {"error": {"code": "method-not-allowed", "message": "Method Not Allowed"}}


def test_undecodable_body_is_the_invalid_json_422(
    client: TestClient, tokens: dict[Role, str]
) -> None:
    r = client.post("/api/v1/audit/lookup", content=b'{"pseudonym": "\xff"}',  # not UTF-8
                    headers={**bearer(tokens[Role.auditor]), "Content-Type": "application/json"})
    assert r.status_code == 422
    assert r.json() == {"error": {"code": "invalid-request", "message": "body: not valid JSON"}}


def test_echo_to_a_host_that_does_not_resolve_is_a_result(
    client: TestClient, tokens: dict[Role, str]
) -> None:
    h = bearer(tokens[Role.admin])
    for name, host in (("dns", "no-such-host.invalid"), ("idna", "a..b")):
        node = {"name": name, "ae_title": "PACS", "host": host, "port": 104}
        assert client.post("/api/v1/admin/nodes", json=node, headers=h).status_code == 201
        r = client.post(f"/api/v1/admin/nodes/{name}/echo?timeout=1", headers=h)
        assert r.status_code == 200, r.text
        assert r.json()["ok"] is False and r.json()["failure"] == "unreachable"


# --- what the document admits, the server accepts -----------------------------------------

_CHARS = st.characters(codec="utf-8", exclude_categories=["Cs"])
_TEXT = st.text(_CHARS, max_size=24) | st.sampled_from(
    ["", " ", "A", " A ", "A B", "A\\B", "A*", "A?", "A\n", "\tA", "\u00a0A", "1.2.3", "1.02",
     "01.2.3.4", "::1", "fe80::1%eth0", "127.0.0.1", "pacs1", "-x", "x" * 17, "ticket 42",
     "ticket\t42", "aaaaaaaaaa", "\u00a0 \u00a0 \u00a0 \u00a0 \u00a0 ", "CR 1 review"]
)


@pytest.fixture(scope="module")
def components(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    home = tmp_path_factory.mktemp("home")
    app = create_app(Settings(home=home, database_url=f"sqlite:///{home}/db"))
    components: dict[str, Any] = app.openapi()["components"]
    return components


def _validator(components: dict[str, Any], name: str) -> Any:
    return jsonschema_rs.Draft202012Validator(
        {"$ref": f"#/components/schemas/{name}", "components": components},
        validate_formats=True,
    )


def _accepts(model: type[BaseModel], body: Any) -> bool:
    try:
        model.model_validate(body)
    except ValidationError:
        return False
    return True


_VALUES = st.lists(_TEXT, max_size=3) | st.none()
_DAY = st.sampled_from(["2024-01-01", "2024-02-01", "2024-13-01", "x"])
# Per request model: a body the server accepts, and what each field may be replaced by.
VARIANTS: dict[str, tuple[dict[str, Any], dict[str, st.SearchStrategy[Any]]]] = {
    "JobRequest": (
        {"pacs": "pacs1", "accession_numbers": ["A1"]},
        {"pacs": _TEXT, "accession_numbers": _VALUES, "patient_ids": _VALUES,
         "study_instance_uids": _VALUES, "policy": _TEXT | st.none(),
         "destination": _TEXT | st.none(),
         "query": st.fixed_dictionaries({"date_from": _DAY, "date_to": _DAY},
                                        optional={"modality": _TEXT}) | st.none()},
    ),
    "NodeCreate": (
        {"name": "pacs1", "ae_title": "ORTHANC", "host": "127.0.0.1", "port": 4242},
        {"name": _TEXT, "ae_title": _TEXT, "host": _TEXT, "port": st.integers(-1, 70000),
         "max_associations": st.integers(0, 65), "retrieve": st.sampled_from(["move", "x"])},
    ),
    "LocalAEUpdate": (
        {"ae_title": "GATE"},
        {"ae_title": _TEXT | st.none(), "host": _TEXT, "port": st.integers(-1, 70000),
         "max_pdu": st.integers(16_000, 17_000) | st.just(1 << 30) | st.just((1 << 30) + 1)},
    ),
    "AllowedIn": ({"ae_title": "MODALITY1"}, {"ae_title": _TEXT, "host": _TEXT | st.none()}),
    "LookupRequest": (
        {"pseudonym": "PSN-0", "reason": "ticket 42, audit"},
        {"pseudonym": _TEXT, "reason": _TEXT | st.text(_CHARS, min_size=8, max_size=40)},
    ),
    "RevealRequest": (
        {"reason": "follow-up ticket 42", "confirm": True},
        {"reason": _TEXT | st.text(_CHARS, min_size=8, max_size=40),
         "confirm": st.sampled_from([True, False, None, "yes", 1])},
    ),
}


def _variant(name: str) -> st.SearchStrategy[tuple[str, Any]]:
    base, fields = VARIANTS[name]
    keys = st.lists(st.sampled_from(sorted(fields)), max_size=2, unique=True)

    def replace(chosen: list[str]) -> st.SearchStrategy[dict[str, Any]]:
        return st.fixed_dictionaries({k: fields[k] for k in chosen}).map(
            lambda new: {**base, **new})

    return keys.flatmap(replace).map(lambda body: (name, body))


def _bodies() -> st.SearchStrategy[tuple[str, Any]]:
    return st.one_of(*(_variant(name) for name in VARIANTS))


MODELS: dict[str, type[BaseModel]] = {
    "JobRequest": JobRequest, "NodeCreate": NodeCreate, "LocalAEUpdate": LocalAEUpdate,
    "AllowedIn": AllowedIn, "LookupRequest": LookupRequest, "RevealRequest": RevealRequest,
}


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=_bodies())
def test_request_schemas_and_server_agree(
    components: dict[str, Any], case: tuple[str, Any]
) -> None:
    """Before: ``ae_title: ""``, ``port: 0``, a one-word reason, two selectors... were valid by
    the document and refused by the server (and ``"\\tA"`` the other way round)."""
    name, body = case
    by_schema = _validator(components, name).is_valid(body) and not _cross_field_refusal(
        name, body)
    assert _accepts(MODELS[name], body) == by_schema, (name, by_schema)


def _cross_field_refusal(name: str, body: Any) -> bool:
    """The one rule JSON Schema cannot state: a date range's order (``date_to`` says "on or
    after date_from" in its description). Only called for schema-valid bodies, so both dates
    are real dates."""
    query = body.get("query") if name == "JobRequest" else None
    return bool(query) and query["date_from"] > query["date_to"]
