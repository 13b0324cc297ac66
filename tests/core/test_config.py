"""Settings: embedded defaults derive everything from DEIDGATE_HOME."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.core.config import load_settings


def test_embedded_defaults_follow_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEIDGATE_HOME", str(tmp_path / "h"))
    monkeypatch.delenv("DEIDGATE_DATABASE_URL", raising=False)
    s = load_settings()
    assert s.home == (tmp_path / "h").resolve()
    assert s.db_url == f"sqlite:///{s.home / 'deidgate.db'}"
    assert s.site_key_path == s.home / "keys" / "site.key"
    assert s.spool_dir.parent == s.home


def test_database_url_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEIDGATE_DATABASE_URL", "postgresql+psycopg://u@127.0.0.1/x")
    assert load_settings().db_url == "postgresql+psycopg://u@127.0.0.1/x"
