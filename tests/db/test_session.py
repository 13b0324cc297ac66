"""SQLite connections are made durable at commit: the database holds the pseudonym mappings,
and the identified spool copy is deleted right after the mapping commit, so that commit must
survive a power cut (WAL + synchronous=NORMAL may roll back the last transactions)."""

from __future__ import annotations

import threading
from pathlib import Path

from sqlalchemy import text

from service.db.session import get_engine


def _pragmas(url: str) -> tuple[str, int]:
    with get_engine(url).connect() as c:
        mode = c.execute(text("PRAGMA journal_mode")).scalar()
        sync = c.execute(text("PRAGMA synchronous")).scalar()
    return str(mode), int(sync or 0)


def test_every_sqlite_connection_is_wal_with_full_sync(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'deidgate.db'}"
    assert _pragmas(url) == ("wal", 2)  # 2 = FULL
    seen: list[tuple[str, int]] = []
    threads = [threading.Thread(target=lambda: seen.append(_pragmas(url))) for _ in range(4)]
    for t in threads:  # pool connections opened on other threads get the same pragmas
        t.start()
    for t in threads:
        t.join(30)
    assert seen == [("wal", 2)] * 4
