"""Audit store cost per de-identified instance, side by side with a plain insert of the same rows.

For each back-end (SQLite file, PostgreSQL on 127.0.0.1) and in one run:
  reference  one transaction per instance inserting the same 5 mapping rows and 1 event row with
             precomputed bytes (no encryption, no HMAC, no chain lock, no collision check)
  audit      AuditStore.record_outcome (AES-GCM per original, keyed lookup hash, chain lock,
             collision check, hash-chained event)
  verify     AuditStore.verify_chain over the resulting log
Prints medians per instance and the ratio. Usage: .venv/bin/python benchmarks/bench_audit.py [N]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, text

from service.audit import AuditStore
from service.core.keys import SiteKeys
from service.db.migrate import upgrade
from service.db.models.audit import AuditEvent, AuditMapping
from service.db.session import get_engine, session_scope
from tests.audit.util import outcome

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _reference(url: str, n: int, offset: int) -> list[float]:
    times = []
    for i in range(offset, offset + n):
        out = outcome(i)
        t0 = time.perf_counter()
        with session_scope(url) as s:
            for m in out.mappings:
                s.add(AuditMapping(kind=m.kind, namespace="ref", pseudonym=f"ref-{m.pseudonym}",
                                   lookup_hash="0" * 64, original_ct=b"x" * 40,
                                   policy_name="p", policy_version="1", source="bench",
                                   created_at=datetime.now(UTC)))
            s.add(AuditEvent(seq=-i - 1, at=datetime.now(UTC), kind="ref", actor="bench",
                             details="{}", prev_hash="0" * 64, hash="0" * 64))
        times.append(time.perf_counter() - t0)
    return times


def _audit(url: str, keys: SiteKeys, n: int) -> list[float]:
    times = []
    for i in range(n):
        out = outcome(i)
        t0 = time.perf_counter()
        with session_scope(url) as s:
            AuditStore(s, keys).record_outcome(out, source="bench", job_id=None)
        times.append(time.perf_counter() - t0)
    return times


def run(name: str, ref_url: str, url: str, keys: SiteKeys, n: int) -> None:
    """``ref_url``: a second, identical database, so the reference rows stay out of the chain."""
    upgrade(ref_url)
    upgrade(url)
    ref = _reference(ref_url, n, 100_000)
    aud = _audit(url, keys, n)
    with session_scope(url) as s:
        t0 = time.perf_counter()
        report = AuditStore(s, keys).verify_chain()
        vt = time.perf_counter() - t0
    mr, ma = statistics.median(ref) * 1e3, statistics.median(aud) * 1e3
    print(f"{name:10s} n={n}  reference {mr:6.2f} ms/instance   audit {ma:6.2f} ms/instance   "
          f"ratio {ma / mr:4.2f}x   verify {report.events / vt:,.0f} events/s "
          f"(ok={report.ok})")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    with tempfile.TemporaryDirectory() as tmp:
        keys = SiteKeys.load(Path(tmp) / "site.key")
        run("sqlite", f"sqlite:///{tmp}/ref.db", f"sqlite:///{tmp}/bench.db", keys, n)
        dbs = [f"deidgate_bench_{uuid.uuid4().hex[:8]}" for _ in range(2)]
        admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        urls = [PG_ADMIN.rsplit("/", 1)[0] + f"/{db}" for db in dbs]
        try:
            with admin.connect() as c:
                for db in dbs:
                    c.execute(text(f'CREATE DATABASE "{db}"'))
            run("postgresql", urls[0], urls[1], keys, n)
        finally:
            with admin.connect() as c:
                for db, url in zip(dbs, urls, strict=True):
                    get_engine(url).dispose()
                    c.execute(text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
            admin.dispose()


if __name__ == "__main__":
    main()
