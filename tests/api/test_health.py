"""The public health endpoint: up with its database, 503 without it."""

from __future__ import annotations

import uuid
from pathlib import Path

from fastapi.testclient import TestClient

from service.api.app import create_app
from service.core.config import Settings
from tests.conftest import PG_ADMIN_URL

HTTPS = "https://testserver"  # plain HTTP is refused outside development


def test_health_ok(client: TestClient) -> None:
    r = client.get("/api/v1/health")
    assert r.status_code == 200
    assert r.json()["status"] == "ok" and r.json()["database"] == "ok"


def test_health_without_database_is_503(tmp_path: Path) -> None:
    missing = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/deidgate_absent_{uuid.uuid4().hex[:8]}"
    app = create_app(Settings(home=tmp_path, database_url=missing))
    with TestClient(app, base_url=HTTPS) as client:
        r = client.get("/api/v1/health")
    assert r.status_code == 503
    assert r.json()["status"] == "degraded" and r.json()["database"] == "unreachable"


def test_database_outage_is_503_not_401_or_500(tmp_path: Path) -> None:
    missing = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/deidgate_absent_{uuid.uuid4().hex[:8]}"
    app = create_app(Settings(home=tmp_path, database_url=missing))
    token = "dgt_0123abcd_" + "A" * 43
    with TestClient(app, base_url=HTTPS) as client:
        r = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 503 and r.headers["retry-after"] == "5"
    assert r.json() == {
        "error": {
            "code": "database-unavailable",
            "message": "the database is unavailable; retry shortly",
        }
    }
