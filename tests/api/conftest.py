"""API test fixtures: an app on a real migrated database (SQLite and PostgreSQL), one token per
role issued through the same code path as ``deidgate token create``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.core.config import Settings
from service.core.security import Role, create_token
from service.db.session import session_scope

HTTPS = "https://testserver"  # plain HTTP is refused outside development


@pytest.fixture()
def app(settings: Settings, migrated_db: str) -> FastAPI:
    return create_app(settings)


@pytest.fixture()
def client(app: FastAPI) -> Iterator[TestClient]:
    # Server errors must come back as responses (to check their bodies), not as exceptions.
    with TestClient(app, base_url=HTTPS, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture()
def tokens(migrated_db: str) -> dict[Role, str]:
    out: dict[Role, str] = {}
    with session_scope(migrated_db) as s:
        for role in Role:
            out[role] = create_token(s, role=role, name=f"test-{role.value}").token
    return out


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
