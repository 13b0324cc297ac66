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


def test_only_the_non_durable_engine_skips_the_commit_fsync(tmp_path: Path) -> None:
    """The hot-path writes whose loss recovery repairs commit with NORMAL; the default engine
    (mappings and every other write) stays FULL, on every connection, also after the other
    engine has been used on the same file."""
    url = f"sqlite:///{tmp_path / 'deidgate.db'}"
    with get_engine(url, False).connect() as c:
        assert str(c.execute(text("PRAGMA journal_mode")).scalar()) == "wal"
        assert int(c.execute(text("PRAGMA synchronous")).scalar() or 0) == 1  # NORMAL
    assert _pragmas(url) == ("wal", 2)
    assert get_engine(url) is not get_engine(url, False)
    from service.db.session import get_sessionmaker

    assert get_sessionmaker(url).kw["bind"] is get_engine(url)
    assert get_sessionmaker(url, False).kw["bind"] is get_engine(url, False)


def test_postgresql_non_durable_engine_turns_off_synchronous_commit(pg_url: str) -> None:
    with get_engine(pg_url, False).connect() as c:
        assert c.execute(text("SHOW synchronous_commit")).scalar() == "off"
    with get_engine(pg_url).connect() as c:
        assert c.execute(text("SHOW synchronous_commit")).scalar() == "on"
