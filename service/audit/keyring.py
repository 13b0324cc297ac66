"""Sealing-key rotation for the pseudonym mappings: create, activate, list, re-key.

What rotates and what never does (linkage). A pseudonym, a de-identified UID and a date shift are
HMACs of the original under the *pseudonym* keys derived from the site key; the same patient
must keep the same pseudonym for as long as the research project lives, so those keys are never
rotated (a new site key is a new pseudonym space: a new project). What rotates is the *sealing*
key of each mapping row: the AES-GCM key of the stored original and the HMAC key of its lookup
hash. Each row names its key (``audit_mappings.key_id``); every host keeps the old keys for
lookup (``seal-<id>.key`` in its keys folder), new rows are sealed under the active key, and
``rekey`` rewrites old rows under the active key on demand, after which an old key file can be
destroyed (``deidgate keys list`` shows how many rows each key still seals).

Several hosts: create the key with ``rotate --no-activate``, copy its file to every host that
records or reads mappings (deid workers, the API), then ``activate``: activation is one row in
the database, so every host switches at once, and a host without the file refuses to seal
(fail closed, ``site-key``) rather than write rows nobody else can open.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from service.audit import chain
from service.audit.crypto import decrypt_original, encrypt_original, lookup_hash
from service.audit.store import AuditStore
from service.core.errors import SiteKeyError
from service.core.keys import (
    SITE_SEAL_ID,
    SealKey,
    SiteKeys,
    check_seal_id,
    create_key_file,
    seal_key_path,
)
from service.db.base import utcnow
from service.db.models.audit import AuditMapping, AuditSealKey


@dataclass(frozen=True)
class KeyInfo:
    key_id: str
    active: bool
    fingerprint: str
    created_at: datetime | None
    rows: int
    present: bool  # this host holds the key file (and it matches the fingerprint)


def new_key_id() -> str:
    return f"k{utcnow():%Y%m%d}-{secrets.token_hex(3)}"


def _row(session: Session, key_id: str) -> AuditSealKey | None:
    return session.get(AuditSealKey, key_id)


def list_keys(session: Session, keys: SiteKeys) -> list[KeyInfo]:
    counts: dict[str, int] = {k: int(n) for k, n in session.execute(
        select(AuditMapping.key_id, func.count()).group_by(AuditMapping.key_id))}
    out = []
    registered = {r.key_id: r for r in session.scalars(select(AuditSealKey))}
    for key_id in sorted(set(registered) | set(counts) | set(keys.seals)):
        r = registered.get(key_id)
        try:
            held: SealKey | None = keys.seal(key_id)
        except SiteKeyError:
            held = None
        fp = r.fingerprint if r is not None and r.fingerprint else (held.fingerprint
                                                                   if held else "")
        out.append(KeyInfo(key_id, bool(r and r.active), fp, r.created_at if r else None,
                           int(counts.get(key_id, 0)),
                           held is not None and (not fp or held.fingerprint == fp)))
    return out


def create(session: Session, keys: SiteKeys, keys_dir: Path, *, actor: str,
           key_id: str | None = None) -> tuple[SiteKeys, SealKey]:
    """A new sealing key file (0600) and its registration, not active yet."""
    key_id = check_seal_id(key_id or new_key_id())
    if key_id == SITE_SEAL_ID or _row(session, key_id) is not None:
        raise SiteKeyError(f"sealing key {key_id!r} exists already")
    path = seal_key_path(keys_dir, key_id)
    if path.exists():
        raise SiteKeyError(f"{path} exists already; choose another id")
    seal = SealKey.from_raw(key_id, create_key_file(path))
    session.add(AuditSealKey(key_id=key_id, fingerprint=seal.fingerprint, active=False,
                             created_at=utcnow()))
    AuditStore(session, keys).log_event("keys.created", actor=actor, details={
        "key_id": key_id, "fingerprint": seal.fingerprint})
    return keys.with_seals([*keys.seals.values(), seal]), seal


def activate(session: Session, keys: SiteKeys, key_id: str, *, actor: str) -> None:
    """New mapping rows are sealed under ``key_id`` from the next transaction on, on every
    host. Refused when this host does not hold the key, or holds a different one."""
    seal = keys.seal(key_id)
    chain.lock(session)  # serialises with recorders, which read the active key after the lock
    row = _row(session, key_id)
    if row is None:  # a key file made elsewhere (an orchestrator secret): register it
        row = AuditSealKey(key_id=key_id, fingerprint=seal.fingerprint, created_at=utcnow())
        session.add(row)
    elif row.fingerprint and row.fingerprint != seal.fingerprint:
        raise SiteKeyError(f"the key file of {key_id!r} here is not the registered one")
    session.execute(update(AuditSealKey).where(AuditSealKey.key_id != key_id)
                    .values(active=False))
    row.active, row.activated_at = True, utcnow()
    row.fingerprint = seal.fingerprint
    AuditStore(session, keys).log_event("keys.activated", actor=actor, details={
        "key_id": key_id, "fingerprint": seal.fingerprint})


def rekey(session: Session, keys: SiteKeys, *, actor: str, batch: int = 500,
          limit: int | None = None) -> int:
    """Re-seal every row not under the active key, ``batch`` rows per transaction (so a large
    table neither holds one long lock nor loses progress); returns how many were re-sealed.

    Only ``original_ct``, ``lookup_hash`` and ``key_id`` change (the trigger refuses anything
    else); the pseudonyms do not, so linkage and the research data are untouched."""
    store = AuditStore(session, keys)
    done = 0
    while limit is None or done < limit:
        target = store.active_seal()
        size = batch if limit is None else min(batch, limit - done)
        rows = session.execute(
            select(AuditMapping.id, AuditMapping.kind, AuditMapping.pseudonym,
                   AuditMapping.original_ct, AuditMapping.key_id)
            .where(AuditMapping.key_id != target.key_id).order_by(AuditMapping.id)
            .limit(size)).all()
        if not rows:
            break
        for row_id, kind, pseudonym, ct, key_id in rows:
            original = decrypt_original(keys.seal(key_id), kind=kind, pseudonym=pseudonym,
                                        blob=ct)
            session.execute(update(AuditMapping).where(
                AuditMapping.id == row_id, AuditMapping.key_id == key_id).values(
                original_ct=encrypt_original(target, kind=kind, pseudonym=pseudonym,
                                             original=original),
                lookup_hash=lookup_hash(target, kind=kind, original=original),
                key_id=target.key_id))
        done += len(rows)
        session.commit()
    if done:
        store.log_event("keys.rekeyed", actor=actor, details={
            "key_id": store.active_seal().key_id, "rows": done})
        session.commit()
    return done

