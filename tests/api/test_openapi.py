"""The OpenAPI document and /docs: present, complete, and honest about auth."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.api.deps import api_operations


def test_docs_page(client: TestClient) -> None:
    r = client.get("/docs")
    assert r.status_code == 200
    assert "/api/v1/openapi.json" in r.text


def test_openapi_lists_every_operation_with_bearer_auth(app: FastAPI, client: TestClient) -> None:
    doc = client.get("/api/v1/openapi.json").json()
    assert doc["info"]["title"] == "deidgate"
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    for method, path, roles in api_operations(app):
        op = doc["paths"][path][method.lower()]
        if roles is None:
            assert "security" not in op, path
        else:
            assert op["security"] == [{"HTTPBearer": []}], path
            assert "401" in op["responses"] and "403" in op["responses"]
    assert all(p.startswith("/api/v1/") for p in doc["paths"])


def test_no_phi_shaped_path_parameters(app: FastAPI) -> None:
    """URLs carry job ids, pseudonyms, node names, AE titles and pseudonymous exam UIDs only."""
    allowed = {"job_id", "dead_letter_id", "pseudonym", "name", "calling_ae", "exam"}
    for _, path, _ in api_operations(app):
        params = {seg[1:-1] for seg in path.split("/") if seg.startswith("{")}
        assert params <= allowed, path
