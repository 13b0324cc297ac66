"""Shared fixtures: a data folder per test, real databases (SQLite and PostgreSQL), site keys.

PostgreSQL (127.0.0.1:5432, trust auth) and Redis (127.0.0.1:6379) run on every development and
CI machine; tests use them for real. Each PostgreSQL test gets its own throw-away database.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from service.core.config import Settings
from service.core.keys import SiteKeys

PG_ADMIN_URL = os.environ.get(
    "DEIDGATE_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture()
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    return h


@pytest.fixture()
def settings(home: Path, db_url: str) -> Settings:
    s = Settings(home=home, database_url=db_url)
    s.ensure_dirs()
    return s


@pytest.fixture()
def site_keys(home: Path) -> SiteKeys:
    return SiteKeys.load(home / "keys" / "site.key")


@pytest.fixture()
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database, dropped afterwards."""
    name = f"deidgate_t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        from service.db.session import get_engine

        get_engine(url).dispose()
        get_engine(url, False).dispose()  # the non-durable hot-path engine
        get_engine.cache_clear()
        from service.db.session import get_sessionmaker

        get_sessionmaker.cache_clear()
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Every database test runs on both back-ends."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'deidgate.db'}"
    else:
        yield request.getfixturevalue("pg_url")


@pytest.fixture()
def migrated_db(db_url: str) -> str:
    from service.db.migrate import upgrade

    upgrade(db_url)
    return db_url
