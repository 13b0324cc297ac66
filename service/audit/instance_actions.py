"""Per-instance record of what de-identification did to each attribute, for auditors.

``record_instance_actions`` runs in the transaction that commits an instance's mappings (see
``workers.deid.pipeline.process_instance``), so the record exists exactly when the de-identified
copy does; the identified copy is deleted afterwards and cannot be consulted later. Each row
names an attribute (element path, tag, keyword, VR) and what happened to it (the action taken,
the action the rule wrote, the rule, and why), never a value: the engine's ``ExplainRow`` carries
none. Identical lists are stored once (see ``service.db.models.deid_actions``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.base import as_utc, utcnow
from service.db.models.deid_actions import DeidActionProfile, DeidInstanceActions

FIELDS = ("path", "tag", "keyword", "vr", "action", "written", "rule", "via")
# How the before/after view groups concrete actions.
GROUPS = {
    "remove": "removed", "empty": "emptied", "dummy": "replaced", "uid": "replaced",
    "pseudonym": "replaced", "shift": "replaced", "clean": "replaced", "keep": "kept",
    "safe-private": "private",
}
GROUP_ORDER = ("removed", "emptied", "replaced", "kept", "private", "other")


@dataclass(frozen=True)
class ActionRow:
    path: str
    tag: str
    keyword: str
    vr: str
    action: str
    written: str
    rule: str
    via: str

    @property
    def group(self) -> str:
        return GROUPS.get(self.action, "other")


@dataclass(frozen=True)
class InstanceActions:
    sop_instance_uid: str
    study_instance_uid: str
    sop_class_uid: str
    policy_name: str
    policy_version: str
    pixel_action: str | None
    pixel_regions: int
    recorded_at: datetime
    rows: list[ActionRow]

    def groups(self) -> dict[str, list[ActionRow]]:
        out: dict[str, list[ActionRow]] = {g: [] for g in GROUP_ORDER}
        for r in self.rows:
            out[r.group].append(r)
        return {g: rows for g, rows in out.items() if rows}


def _canonical(rows: Sequence[Any]) -> str:
    return json.dumps([[str(getattr(r, f)) for f in FIELDS] for r in rows],
                      separators=(",", ":"), ensure_ascii=False)


def _insert(session: Session, model: type, values: dict[str, Any], *, key: str,
            update: bool) -> None:
    from sqlalchemy.dialects import postgresql, sqlite

    pg = session.get_bind().dialect.name == "postgresql"
    stmt: Any = (postgresql.insert if pg else sqlite.insert)(model).values(**values)
    if update:
        stmt = stmt.on_conflict_do_update(index_elements=[key], set_={
            k: v for k, v in values.items() if k != key})
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=[key])
    session.execute(stmt)


def record_instance_actions(session: Session, outcome: Any) -> None:
    """Store ``outcome.explain`` (the engine's rows for this instance) under its pseudonymous
    SOP Instance UID. A re-run of the same instance replaces its record."""
    text = _canonical(outcome.explain)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    now = utcnow()
    _insert(session, DeidActionProfile, {"digest": digest, "rows": text,
                                         "n_rows": len(outcome.explain), "created_at": now},
            key="digest", update=False)
    pixel = outcome.pixel
    _insert(session, DeidInstanceActions, {
        "sop_instance_uid": outcome.sop_instance_uid,
        "study_instance_uid": outcome.study_instance_uid,
        "profile_digest": digest,
        "sop_class_uid": outcome.sop_class_uid,
        "policy_name": outcome.policy_name[:128],
        "policy_version": str(outcome.policy_version)[:64],
        "pixel_action": pixel.action if pixel is not None else None,
        "pixel_regions": len(pixel.regions) if pixel is not None else 0,
        "recorded_at": now,
    }, key="sop_instance_uid", update=True)


def load_instance_actions(session: Session, sop_instance_uid: str) -> InstanceActions | None:
    row = session.get(DeidInstanceActions, sop_instance_uid)
    if row is None:
        return None
    profile = session.scalar(select(DeidActionProfile).where(
        DeidActionProfile.digest == row.profile_digest))
    rows = [ActionRow(*r) for r in json.loads(profile.rows)] if profile else []
    return InstanceActions(row.sop_instance_uid, row.study_instance_uid, row.sop_class_uid,
                           row.policy_name, row.policy_version, row.pixel_action,
                           row.pixel_regions, as_utc(row.recorded_at), rows)


def instances_of_study(session: Session, study_instance_uid: str) -> list[str]:
    return list(session.scalars(select(DeidInstanceActions.sop_instance_uid).where(
        DeidInstanceActions.study_instance_uid == study_instance_uid)
        .order_by(DeidInstanceActions.sop_instance_uid)))
