"""The append-only, hash-chained audit event log: appending and verifying.

Each event's ``hash`` is HMAC-SHA256 (key derived from the site key, see crypto.chain_key) over
a canonical JSON of (version, time, kind, actor, details, prev_hash). HMAC rather than a bare
SHA-256: with a bare hash, anyone able to write the table (a DBA, a stolen dump restored
elsewhere) could edit a row and recompute every later hash, and the edited chain would verify.
The price is that verification needs the site key; auditors run it through the gateway.

The sequence number is deliberately *not* hashed: a row's place in the chain is fixed by
``prev_hash`` alone, so verification can tell an edited row (its content no longer matches its
hash) from a moved one (intact content, linked from the wrong place) from a deleted one (a row
points at a hash no row has, or a seq is missing).

Appends are serialized on the one-row ``audit_chain_head`` table: the first statement of an
append is ``UPDATE audit_chain_head SET seq = seq + 1 ... RETURNING``. On PostgreSQL this takes
the row lock until commit (under READ COMMITTED a waiting UPDATE re-reads the committed row, so
it continues the chain rather than forking it); on SQLite the UPDATE takes the database write
lock. The head also anchors the tail: deleting the newest events leaves the head ahead of them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from service.audit import stored
from service.audit.crypto import chain_key
from service.audit.stored import StoredEvent
from service.core.errors import ConfigurationError
from service.core.keys import SiteKeys
from service.db.base import as_utc, utcnow
from service.db.models.audit import GENESIS_HASH, AuditChainHead, AuditEvent

HASH_VERSION = 1


def canonical_details(details: dict[str, Any]) -> str:
    """Sorted keys, no whitespace, UTF-8: the exact text stored and hashed."""
    return json.dumps(details, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def _time_text(at: datetime) -> str:
    return as_utc(at).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_hash(key: bytes, *, at: datetime, kind: str, actor: str, details: str,
               prev_hash: str) -> str:
    body = json.dumps(
        [HASH_VERSION, _time_text(at), kind, actor, details, prev_hash],
        separators=(",", ":"), ensure_ascii=False,
    )
    return hmac.new(key, body.encode("utf-8"), hashlib.sha256).hexdigest()


def reserve(session: Session) -> tuple[int, str]:
    """Lock the chain head for this transaction; returns (next seq, previous hash)."""
    row = session.execute(
        update(AuditChainHead)
        .where(AuditChainHead.id == 1)
        .values(seq=AuditChainHead.seq + 1)
        .returning(AuditChainHead.seq, AuditChainHead.hash)
    ).one_or_none()
    if row is None:
        raise ConfigurationError("the audit chain head row is missing (deleted, or the schema "
                                 "is not migrated: run `deidgate db upgrade`)")
    return int(row[0]), str(row[1])


def append(session: Session, keys: SiteKeys, kind: str, *, actor: str,
           details: dict[str, Any]) -> AuditEvent:
    """Append one event inside the caller's transaction (visible to others on commit)."""
    text = canonical_details(details)
    kind, actor = kind[:32], actor[:128]  # column widths; the hash covers what is stored
    seq, prev = reserve(session)
    at = utcnow()
    digest = event_hash(chain_key(keys), at=at, kind=kind, actor=actor, details=text,
                        prev_hash=prev)
    event = AuditEvent(seq=seq, at=at, kind=kind, actor=actor, details=text, prev_hash=prev,
                       hash=digest)
    session.add(event)
    session.execute(update(AuditChainHead).where(AuditChainHead.id == 1).values(hash=digest))
    session.flush()
    return event


@dataclass(frozen=True)
class Finding:
    seq: int
    problem: str  # edited | deleted | reordered | forked | unanchored | head
    detail: str


@dataclass
class ChainReport:
    """What ``verify`` found; ``ok`` only when no finding. Names seqs, never event contents."""

    events: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS_HASH  # record it outside the database to anchor later checks
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def first_bad_seq(self) -> int | None:
        return min((f.seq for f in self.findings), default=None)

    def _seqs(self, problem: str) -> list[int]:
        return sorted({f.seq for f in self.findings if f.problem == problem})

    @property
    def edited(self) -> list[int]:
        return self._seqs("edited")

    @property
    def deleted(self) -> list[int]:
        return self._seqs("deleted")

    @property
    def reordered(self) -> list[int]:
        return self._seqs("reordered")

    def lines(self) -> list[str]:
        return [f"seq {f.seq}: {f.problem}: {f.detail}"
                for f in sorted(self.findings, key=lambda f: (f.seq, f.problem))]


@dataclass
class _Row:
    seq: int
    prev: str
    hash: str
    content_ok: bool


def _content_ok(key: bytes, e: StoredEvent) -> bool:
    """The stored hash matches the recomputed one; a row with any unreadable column is not."""
    if e.unreadable or e.at is None or e.kind is None or e.actor is None \
            or e.details is None or e.prev_hash is None or e.hash is None:
        return False
    expect = event_hash(key, at=e.at, kind=e.kind, actor=e.actor, details=e.details,
                        prev_hash=e.prev_hash)
    # bytes: compare_digest refuses str holding non-ASCII, which an edited hash may hold
    return hmac.compare_digest(expect.encode(), e.hash.encode("utf-8", "surrogatepass"))


def _rows(key: bytes, events: Iterable[StoredEvent]) -> tuple[list[_Row], list[Finding], int]:
    """Rows in chain order, each with a seq; findings for rows no seq can be given; the count.

    Streams: only the small per-row summary is kept, not the row's content. A row whose seq
    cannot be read is placed by its links: right after the row whose hash it names as
    predecessor, or right before the row that names its hash. NULL or unreadable hashes get a
    placeholder that matches nothing, so the neighbours' broken links are explained by this
    edited row instead of being blamed on them."""
    rows: list[_Row] = []
    placeless: list[tuple[str, str]] = []
    count = 0
    for i, e in enumerate(events):
        count += 1
        prev = e.prev_hash if e.prev_hash is not None else f"\x00unreadable-prev-{i}"
        digest = e.hash if e.hash is not None else f"\x00unreadable-hash-{i}"
        if e.seq is None:
            placeless.append((prev, digest))
        else:
            rows.append(_Row(e.seq, prev, digest, _content_ok(key, e)))
    findings: list[Finding] = []
    by_hash = {r.hash: r.seq for r in rows}
    by_prev = {r.prev: r.seq for r in rows}
    taken = {r.seq for r in rows}
    for prev, digest in placeless:
        seq = 1 if prev == GENESIS_HASH else None
        if seq is None and prev in by_hash:
            seq = by_hash[prev] + 1
        if seq is None and digest in by_prev:
            seq = by_prev[digest] - 1
        if seq is None or seq in taken:
            findings.append(Finding(0, "edited", "a row's seq is unreadable and its links do "
                                    "not place it"))
            continue
        taken.add(seq)
        rows.append(_Row(seq, prev, digest, False))
    rows.sort(key=lambda r: r.seq)
    return rows, findings, count


def verify(session: Session, keys: SiteKeys, *, anchors: Sequence[tuple[int, str]] = (),
           batch: int = 5000) -> ChainReport:
    """Recompute every hash and check every link; classify each anomaly by row.

    Every column is read as stored text (service.audit.stored): a row holding junk or NULL
    anywhere is reported as edited, by seq, and never stops the check.

    ``anchors``: (seq, hash) pairs recorded outside the database earlier (from a previous
    report's head). Someone with write access and the patience to drop the newest events *and*
    rewind the head row leaves a chain that is consistent in itself; only an outside record of
    an earlier head shows it.
    """
    key = chain_key(keys)
    rows, findings, count = _rows(key, stored.read_events(session, batch=batch))
    head = stored.read_head(session)
    report = ChainReport(events=count)
    if head is not None and head.seq is not None and head.hash is not None:
        report.head_seq, report.head_hash = head.seq, head.hash
        report.findings.extend(_classify(rows, (head.seq, head.hash)))
    else:
        report.findings.extend(f for f in _classify(rows, None) if f.problem != "head")
        report.findings.append(Finding(0, "head", "the chain head row is missing" if head is None
                                       else "the chain head row is unreadable"))
    report.findings.extend(findings)
    by_seq = {r.seq: r.hash for r in rows}
    for seq, digest in anchors:
        if by_seq.get(seq) != digest.lower():
            report.findings.append(Finding(seq, "anchor", "does not match the recorded anchor "
                                           "(the log was truncated or rewritten since)"))
    return report


def _classify(rows: list[_Row], head: tuple[int, str] | None) -> list[Finding]:
    out: list[Finding] = []
    by_hash: dict[str, int] = {}
    succ: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        if not r.content_ok:
            out.append(Finding(r.seq, "edited", "content does not match its hash"))
        if r.hash in by_hash:
            out.append(Finding(r.seq, "forked", f"duplicate of seq {rows[by_hash[r.hash]].seq}"))
        else:
            by_hash[r.hash] = i
        succ[r.prev].append(i)
    for siblings in succ.values():
        for j in siblings[1:]:
            out.append(Finding(rows[j].seq, "forked",
                               f"links to the same predecessor as seq {rows[siblings[0]].seq}"))
    edited = {i for i, r in enumerate(rows) if not r.content_ok}

    prev_seq = 0
    for i, r in enumerate(rows):
        if r.seq > prev_seq + 1:
            missing = f"{prev_seq + 1}" if r.seq == prev_seq + 2 else f"{prev_seq + 1}-{r.seq - 1}"
            out.append(Finding(prev_seq + 1, "deleted", f"seq {missing} missing"))
        prev_seq = r.seq
        expected_prev = rows[i - 1].hash if i else GENESIS_HASH
        if r.prev == expected_prev:
            continue
        pred = -1 if r.prev == GENESIS_HASH else by_hash.get(r.prev)  # -1: the chain start
        if pred is None:  # links to a hash no row has
            gap_before = r.seq != (rows[i - 1].seq + 1 if i else 1)
            explained = i in edited or (i - 1) in edited or gap_before
            if not explained:
                out.append(Finding(r.seq, "deleted",
                                   "its predecessor is missing (later rows renumbered)"))
            continue
        nxt = succ.get(r.hash, [])
        expected_next = i + 1 if i + 1 < len(rows) else None
        next_ok = (nxt[0] if nxt else None) == expected_next
        if not next_ok:
            where = "the chain start" if pred < 0 else f"seq {rows[pred].seq}"
            out.append(Finding(r.seq, "reordered", f"belongs after {where}"))

    last = rows[-1] if rows else None
    if head is not None:
        head_seq, head_hash = head
        last_seq = last.seq if last else 0
        last_hash = last.hash if last else GENESIS_HASH
        if head_seq > last_seq:
            span = f"{last_seq + 1}" if head_seq == last_seq + 1 else f"{last_seq + 1}-{head_seq}"
            out.append(Finding(last_seq + 1, "deleted", f"seq {span} missing at the tail"))
        elif head_seq < last_seq:
            for r in rows:
                if r.seq > head_seq:
                    out.append(Finding(r.seq, "unanchored", "added behind the chain head"))
        elif head_hash != last_hash:
            out.append(Finding(last_seq, "head", "the chain head does not match the last event"))
    else:
        out.append(Finding(0, "head", "the chain head row is missing"))
    return out


def lock(session: Session) -> None:
    """Take the append lock now (a no-op write to the head row), held until commit."""
    session.execute(update(AuditChainHead).where(AuditChainHead.id == 1)
                    .values(seq=AuditChainHead.seq))
