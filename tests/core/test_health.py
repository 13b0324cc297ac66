"""Readiness checks against real peers (SQLite, PostgreSQL, Redis, the filesystem broker, the
spool's file system, a published model status), each also in its failing variant."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from service.core.health import (
    check_broker,
    check_database,
    check_model,
    check_spool,
    readiness,
    write_model_status,
)
from service.db.migrate import script_heads, upgrade
from service.db.session import get_engine
from tests.e2e.harness import redis_server
from tests.peers.net import free_port

pytestmark = pytest.mark.integration


def test_database_up_and_migrated(db_url: str) -> None:
    engine = get_engine(db_url)
    assert check_database(engine).code == "ok"
    heads = script_heads(db_url)
    behind = check_database(engine, expected_heads=heads)
    assert (behind.ok, behind.code, behind.data["applied"]) == (False, "not-migrated", 0)
    upgrade(db_url)
    migrated = check_database(engine, expected_heads=heads)
    assert migrated.ok and migrated.data["dialect"] == engine.dialect.name


@pytest.mark.parametrize("url", [
    f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/postgres?connect_timeout=2",
    "sqlite:////nonexistent-folder/deidgate.db",
])
def test_database_unreachable(url: str) -> None:
    result = check_database(get_engine(url))
    assert (result.ok, result.code) == (False, "unreachable")
    assert "nonexistent" not in json.dumps(result.as_dict())  # codes, not driver messages


def test_broker_redis_and_filesystem(tmp_path: Path) -> None:
    with redis_server(tmp_path) as (url, _restart):
        ok = check_broker(url)
    assert (ok.ok, ok.data["transport"]) == (True, "redis")
    folder = tmp_path / "broker"
    opts = {"data_folder_in": str(folder), "data_folder_out": str(folder)}
    folder.mkdir()
    assert check_broker("filesystem://", opts).ok


def test_broker_unreachable_answers_quickly() -> None:
    started = time.monotonic()
    result = check_broker(f"redis://127.0.0.1:{free_port()}/0", timeout_s=2)
    assert (result.ok, result.code) == (False, "unreachable")
    assert time.monotonic() - started < 10  # no retry loop behind it


def test_spool(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    assert check_spool(spool, floor_bytes=0).code == "missing"
    spool.mkdir()
    ok = check_spool(spool, floor_bytes=1 << 20)
    assert ok.ok and int(ok.data["free_bytes"]) >= 1 << 20
    low = check_spool(spool, floor_bytes=int(ok.data["total_bytes"]) + 1)
    assert (low.ok, low.code) == (False, "low-space")
    if os.geteuid() != 0:  # root may write anywhere: the mode alone cannot refuse it
        spool.chmod(0o500)
        assert check_spool(spool, floor_bytes=0).code == "read-only"
        spool.chmod(0o700)


def test_model_status(tmp_path: Path) -> None:
    path = tmp_path / "run" / "model-status.json"
    assert check_model(path, required=False).code == "not-configured"
    assert check_model(path, required=True).code == "missing"
    write_model_status(path, state="loaded", model="demo", version="1", sha256="ab" * 32,
                       device="cpu")
    ok = check_model(path, required=True)
    assert ok.ok and (ok.data["model"], ok.data["device"]) == ("demo", "cpu")
    assert check_model(path, required=True, max_age_s=-1).code == "stale"
    write_model_status(path, state="failed", model="demo", version="1", sha256="", device="cpu")
    assert check_model(path, required=True).code == "failed"
    path.write_text("{not json")
    assert check_model(path, required=True).code == "unreadable"


def test_readiness_summary(tmp_path: Path) -> None:
    (tmp_path / "spool").mkdir()
    good = check_spool(tmp_path / "spool", floor_bytes=0)
    bad = check_model(tmp_path / "none.json", required=True)
    ready, body = readiness([good])
    assert ready and body["status"] == "ready"
    ready, body = readiness([good, bad])
    assert not ready and body["status"] == "not-ready"
    assert [(c["name"], c["ok"], c["code"]) for c in body["checks"]] == [
        ("spool", True, "ok"), ("model", False, "missing")]
