"""Engine and session factory: one engine per process per URL, built when asked, not at import.

SQLite (the embedded default) gets WAL, a busy timeout and foreign keys, so the listener, API
and workers of one machine can share the file, and ``synchronous=FULL``: this database holds
the pseudonym mappings, and the pipeline deletes the identified spool copy right after the
mapping commit returns. In WAL mode ``synchronous=NORMAL`` does not fsync the WAL at commit,
so a power cut can roll back the last commits: the mapping (and "instance done") would be gone
while the identified copy already is, and the de-identified output would point at a mapping
nobody can look up. FULL fsyncs the WAL at every commit, so a commit that returned survives.

``durable=False`` gives a second engine for the hot-path writes whose loss at a power cut the
recovery already repairs (the listener's received-instance row: start-up orphan recovery
registers its fsynced spool file again; linking it to a job and claiming or releasing an
instance: the sweep links, re-claims or retakes a stale claim). Those commit without waiting for
the disk: SQLite ``synchronous=NORMAL`` (in WAL mode: no fsync at commit; the database stays
consistent, a power cut can only lose the last commits, and the next durable commit's WAL fsync
makes everything before it durable too), PostgreSQL ``synchronous_commit=off`` (the same
guarantee). Everything else, above all the mapping commit, stays fully durable; callers choose
``durable=False`` only where the module doing the write says why its loss is repaired.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker


@lru_cache(maxsize=8)
def get_engine(url: str, durable: bool = True) -> Engine:
    """``durable=False``: commits that do not wait for the disk (see the module docstring)."""
    kwargs: dict[str, Any] = {"future": True}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
    else:
        kwargs["pool_pre_ping"] = True
        if not durable and url.startswith("postgresql"):
            kwargs["connect_args"] = {"options": "-c synchronous_commit=off"}
    engine = create_engine(url, **kwargs)
    if url.startswith("sqlite"):
        sync = "FULL" if durable else "NORMAL"

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _rec: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={sync}")  # see the module docstring
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

    return engine


@lru_cache(maxsize=8)
def get_sessionmaker(url: str, durable: bool = True) -> sessionmaker[Session]:
    # one cache key per engine: ``get_engine(url)`` is the durable one everywhere
    return sessionmaker(get_engine(url) if durable else get_engine(url, False),
                        expire_on_commit=False)


@contextmanager
def session_scope(url: str, durable: bool = True) -> Iterator[Session]:
    """A transaction: commit on success, roll back on any exception."""
    session = (get_sessionmaker(url) if durable else get_sessionmaker(url, False))()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
