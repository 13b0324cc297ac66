"""What synchronous=FULL costs on SQLite, side by side with NORMAL, in one run on one disk.

service/db/session.py sets FULL (WAL fsynced at every commit) because the pipeline deletes the
identified spool copy right after the mapping commit; NORMAL can roll that commit back at a
power cut. This measures the price per transaction for the two commits on the hot path:

  mapping   AuditStore.record_outcome of one instance (5 mappings + 1 chained event)
  received  the listener's one-row insert into dicom_received_instances

Each variant writes its own database file in the same folder; rounds alternate NORMAL and FULL
so that disk noise hits both alike. Prints medians (ms per commit) and the ratio FULL / NORMAL.
Run it on the disk that will hold the database (tmpfs makes fsync free and the ratio ~1):

    .venv/bin/python benchmarks/bench_sqlite_sync.py                  # folder: ./.bench-tmp
    .venv/bin/python benchmarks/bench_sqlite_sync.py --dir /var/lib/deidgate --n 100 --rounds 6
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from sqlalchemy import event, text

from service.audit import AuditStore
from service.core.keys import SiteKeys
from service.db.migrate import upgrade
from service.db.models.dicom import ReceivedInstance
from service.db.session import get_engine, session_scope
from tests.audit.util import outcome


def _normal(url: str) -> None:
    """Undo session.py's FULL for this engine only (runs after its connect listener)."""
    engine = get_engine(url)

    @event.listens_for(engine, "connect")
    def _sync_normal(dbapi_conn: Any, _rec: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    engine.dispose()  # connections pooled before the listener existed would keep FULL


def _mapping(url: str, keys: SiteKeys, start: int, n: int) -> list[float]:
    times = []
    for i in range(start, start + n):
        out = outcome(i)
        t0 = time.perf_counter()
        with session_scope(url) as s:
            AuditStore(s, keys).record_outcome(out, source="bench", job_id=None)
        times.append(time.perf_counter() - t0)
    return times


def _received(url: str, n: int) -> list[float]:
    times = []
    for _ in range(n):
        row = ReceivedInstance(sop_key=secrets.token_hex(32), series_key="s" * 64,
                               study_key="t" * 64, sop_class_uid="1.2.840.10008.5.1.4.1.1.1.2",
                               transfer_syntax="1.2.840.10008.1.2.1", spool_path="/x", node="bench",
                               calling_ae="BENCH", size_bytes=1, status="received")
        t0 = time.perf_counter()
        with session_scope(url) as s:
            s.add(row)
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", type=Path, default=Path(".bench-tmp"))
    ap.add_argument("--n", type=int, default=60, help="commits per variant per round")
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    folder = args.dir / f"sync-{secrets.token_hex(4)}"
    folder.mkdir(parents=True)
    try:
        keys = SiteKeys.load(folder / "site.key")
        urls = {v: f"sqlite:///{folder / f'{v}.db'}" for v in ("normal", "full")}
        for url in urls.values():
            upgrade(url)
        _normal(urls["normal"])
        for v, url in urls.items():
            with get_engine(url).connect() as c:
                sync = c.execute(text("PRAGMA synchronous")).scalar()
                mode = c.execute(text("PRAGMA journal_mode")).scalar()
            print(f"{v:6s} PRAGMA synchronous = {sync}, journal_mode = {mode}")
        res: dict[tuple[str, str], list[float]] = {}
        for r in range(args.rounds):
            order = ("normal", "full") if r % 2 == 0 else ("full", "normal")
            for v in order:
                res.setdefault(("mapping", v), []).extend(
                    _mapping(urls[v], keys, r * args.n, args.n))
                res.setdefault(("received", v), []).extend(_received(urls[v], args.n))
        print(f"folder {args.dir.resolve()}  {args.rounds} rounds x {args.n} commits per variant")
        for what in ("mapping", "received"):
            normal = statistics.median(res[(what, "normal")]) * 1e3
            full = statistics.median(res[(what, "full")]) * 1e3
            print(f"{what:9s} NORMAL {normal:6.2f} ms/commit   FULL {full:6.2f} ms/commit   "
                  f"ratio FULL/NORMAL {full / normal:4.2f}x")
    finally:
        for url in (f"sqlite:///{folder / 'normal.db'}", f"sqlite:///{folder / 'full.db'}"):
            get_engine(url).dispose()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
