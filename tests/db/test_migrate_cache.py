"""``ensure_schema`` with a cache answers a current database without importing Alembic, and a
stale, foreign or broken cache never skips a needed upgrade."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from sqlalchemy import inspect

from service.db.migrate import HEADS_CACHE, ensure_schema, recorded_heads, script_heads
from service.db.session import get_engine


def test_a_current_database_is_checked_without_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    cache = tmp_path / "cache"
    assert recorded_heads(url) is None  # no version table yet
    ensure_schema(url, cache)
    assert recorded_heads(url) == script_heads(url)
    assert (cache / HEADS_CACHE).exists()
    code = ("import sys; from pathlib import Path; from service.db.migrate import ensure_schema;"
            f"ensure_schema({url!r}, Path({str(cache)!r}));"
            "print('alembic' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=Path(__file__).resolve().parents[2], check=True)
    assert r.stdout.strip() == "False"


def test_the_cache_never_skips_an_upgrade(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    ensure_schema(f"sqlite:///{tmp_path / 'a.db'}", cache)
    other = f"sqlite:///{tmp_path / 'b.db'}"  # a new, empty database, same cache
    ensure_schema(other, cache)
    assert "jobs" in inspect(get_engine(other)).get_table_names()
    (cache / HEADS_CACHE).write_text('{"scripts": [], "heads": ["0001_base"]}')  # stale
    third = f"sqlite:///{tmp_path / 'c.db'}"
    ensure_schema(third, cache)
    assert recorded_heads(third) == script_heads(third)
    (cache / HEADS_CACHE).write_text("{broken")
    ensure_schema(third, cache)  # still fine, and the cache is rewritten
    assert set(json.loads((cache / HEADS_CACHE).read_text())["heads"]) == script_heads(third)
