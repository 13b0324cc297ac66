"""The factory holds no global state: importing builds nothing, and two apps built from two
settings objects serve two databases side by side."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from fastapi.testclient import TestClient

from service.api.app import create_app
from service.core.config import Settings
from service.core.security import Role, create_token
from service.db.migrate import upgrade
from service.db.session import session_scope

HTTPS = "https://testserver"  # plain HTTP is refused outside development


def test_import_builds_no_engine_settings_or_keys() -> None:
    code = (
        "import service.api.app, service.api.deps, service.api.routes;"
        "from service.db.session import get_engine;"
        "assert get_engine.cache_info().currsize == 0;"
        "print('clean')"
    )
    # A settings value that cannot validate: import must not even try to build Settings.
    env = {"DEIDGATE_ENVIRONMENT": "not-an-environment", "PATH": "/usr/bin:/bin"}
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=Path.cwd()
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "clean"


def test_two_apps_two_databases(tmp_path: Path) -> None:
    apps = []
    for name in ("a", "b"):
        home = tmp_path / name
        s = Settings(home=home, database_url=f"sqlite:///{home}.db")
        s.ensure_dirs()
        upgrade(s.db_url)
        apps.append((s, create_app(s)))
    with session_scope(apps[0][0].db_url) as sess:
        token = create_token(sess, role=Role.staff, name="only-in-a").token
    h = {"Authorization": f"Bearer {token}"}
    with TestClient(apps[0][1], base_url=HTTPS) as a, TestClient(apps[1][1], base_url=HTTPS) as b:
        assert a.get("/api/v1/auth/me", headers=h).json()["name"] == "only-in-a"
        assert b.get("/api/v1/auth/me", headers=h).status_code == 401
