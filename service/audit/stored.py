"""Audit rows read as the database stores them, for readers that must survive tampering.

The ORM's column types parse on the way out (``DateTime`` on SQLite runs a regex and raises on
junk; a JSON column would ``json.loads``), so one edited value used to crash ``audit verify``
and the API with a traceback inside SQLAlchemy. Whoever can write the database can also drop
the append-only triggers, retype a column or remove a NOT NULL constraint, so the readers here
assume nothing about what they get back: every column is fetched as stored text, and each value
is decoded in Python, where a failure only marks that column of that row as unreadable.

How "as stored text" is asked for, per dialect:

- SQLite: ``hex(column)``. A column can hold bytes that are not UTF-8 (a BLOB in a TEXT column),
  which Python's sqlite3 module refuses to decode and raises on. ``hex`` turns whatever is
  stored (text, number, blob) into ASCII; the bytes are decoded here, strictly.
- PostgreSQL: ``CAST(column AS TEXT)``, which works for any column type (a retyped one too). The
  text form of a timestamp depends on the session's TimeZone and DateStyle, which a database
  owner can change with ALTER DATABASE; both are pinned for the reading transaction
  (``SET LOCAL``), so the decoded instant does not depend on them.

Nothing here interprets the meaning of a row: verification (service.audit.chain) recomputes the
hash from what was decoded, and a row with an unreadable column is reported as edited.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

EVENT_COLUMNS = ("seq", "at", "kind", "actor", "details", "prev_hash", "hash")
_INT = re.compile(r"-?[0-9]{1,18}")
# SQLite (SQLAlchemy's storage format): 2026-03-01 12:34:56.123456, naive UTC.
# PostgreSQL (ISO DateStyle, TimeZone UTC): 2026-03-01 12:34:56.123456+00, fraction optional.
_TIME = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[ T]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,6}))?"
    r"(?:(Z)|([+-])([0-9]{2})(?::?([0-9]{2}))?(?::?([0-9]{2}))?)?")


@dataclass(frozen=True)
class StoredEvent:
    """One ``audit_events`` row, each column decoded or None; ``unreadable`` names the columns
    that were NULL or could not be decoded (in ``EVENT_COLUMNS`` order)."""

    seq: int | None
    at: datetime | None
    kind: str | None
    actor: str | None
    details: str | None  # the canonical JSON text exactly as stored (what is hashed)
    prev_hash: str | None
    hash: str | None
    unreadable: tuple[str, ...]


@dataclass(frozen=True)
class StoredHead:
    """The one ``audit_chain_head`` row; a column that could not be read is None."""

    seq: int | None
    hash: str | None


def _column(dialect: str, name: str) -> str:
    quoted = f'"{name}"'
    if dialect == "sqlite":
        return f"CASE WHEN {quoted} IS NULL THEN NULL ELSE hex({quoted}) END"
    return f"CAST({quoted} AS TEXT)"


def _pin_text_forms(session: Session) -> str:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":  # for this transaction only
        session.execute(text("SET LOCAL TimeZone = 'UTC'"))
        session.execute(text("SET LOCAL DateStyle = 'ISO, YMD'"))
    return dialect


def _text(dialect: str, raw: Any) -> str | None:
    if raw is None:
        return None
    if dialect == "sqlite":
        try:
            return bytes.fromhex(str(raw)).decode("utf-8")
        except ValueError:  # UnicodeDecodeError is a ValueError
            return None
    return str(raw)


def parse_int(value: str | None) -> int | None:
    if value is None or not _INT.fullmatch(value):
        return None
    return int(value)


def parse_time(value: str | None) -> datetime | None:
    """The instant a stored timestamp names, in UTC; None for anything else."""
    m = _TIME.fullmatch(value) if value is not None else None
    if m is None:
        return None
    y, mo, d, h, mi, s, frac, _zulu, sign, oh, om, os_ = m.groups()
    try:
        at = datetime(int(y), int(mo), int(d), int(h), int(mi), int(s),
                      int((frac or "0").ljust(6, "0")), tzinfo=UTC)
        if sign:
            offset = timedelta(hours=int(oh), minutes=int(om or 0), seconds=int(os_ or 0))
            at = at.replace(tzinfo=timezone(offset if sign == "+" else -offset))
        return at.astimezone(UTC)
    except (ValueError, OverflowError):  # month 13, hour 25, offset beyond a day, year 0
        return None


def parse_details(value: str | None) -> dict[str, Any] | None:
    """Event details are a JSON object; anything else (edited to junk or a list) is None."""
    if value is None:
        return None
    try:
        obj = json.loads(value)
    except (ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


def _decode(dialect: str, row: Any) -> StoredEvent:
    seq_t, at_t, kind, actor, details, prev, digest = (_text(dialect, v) for v in row)
    seq, at = parse_int(seq_t), parse_time(at_t)
    values = (seq, at, kind, actor, details, prev, digest)
    unreadable = tuple(c for c, v in zip(EVENT_COLUMNS, values, strict=True) if v is None)
    return StoredEvent(seq, at, kind, actor, details, prev, digest, unreadable)


def read_events(session: Session, *, kind: str | None = None, limit: int | None = None,
                newest_first: bool = False, batch: int = 5000) -> Iterator[StoredEvent]:
    """Every event (or the newest ``limit`` of ``kind``), ordered by ``seq`` as stored.

    A retyped ``seq`` column sorts as text; verification re-sorts by the decoded number."""
    dialect = _pin_text_forms(session)
    cols = ", ".join(_column(dialect, c) for c in EVENT_COLUMNS)
    sql = f"SELECT {cols} FROM audit_events"  # noqa: S608 - fixed column names, no input
    params: dict[str, Any] = {}
    if kind is not None:
        sql += " WHERE kind = :kind"
        params["kind"] = kind
    sql += " ORDER BY seq DESC" if newest_first else " ORDER BY seq"
    if limit is not None:
        sql += " LIMIT :limit"
        params["limit"] = int(limit)
    result = session.execute(text(sql).execution_options(yield_per=batch), params)
    for row in result:
        yield _decode(dialect, row)


def read_head(session: Session) -> StoredHead | None:
    """The chain head row as stored; None when the row is gone."""
    dialect = _pin_text_forms(session)
    row = session.execute(text(
        f"SELECT {_column(dialect, 'seq')}, {_column(dialect, 'hash')} "  # noqa: S608
        "FROM audit_chain_head WHERE id = 1")).first()
    if row is None:
        return None
    return StoredHead(parse_int(_text(dialect, row[0])), _text(dialect, row[1]))
