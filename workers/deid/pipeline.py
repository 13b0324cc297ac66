"""One instance through de-identification, in the order that makes "nothing lost" true.

1. de-identify in memory (the engine raises ``Rejected`` for anything it cannot fully handle);
2. write the de-identified copy durably (temp file, fsync, atomic rename);
3. in ONE transaction: record every pseudonym mapping and the audit event, plus whatever the
   caller marks done (``on_commit``: the received-instance row, job counters);
4. only then delete the identified copy (``delete_source``).

A crash between 2 and 3 leaves a de-identified file whose mapping is missing; the rerun is
deterministic (keyed pseudonyms and UIDs), so it rewrites the same file and commits. A crash
between 3 and 4 leaves an identified spool copy whose work is done; the rerun is idempotent.
Refused inputs are moved to quarantine (spool inputs) or only reported (user files), with the
reason, never passed on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from service.audit.instance_actions import record_instance_actions
from service.audit.store import AuditStore
from service.core import metrics
from service.core.errors import Rejected, Retryable
from service.core.fsync import fsync_dir, move_durably
from service.core.keys import SiteKeys
from service.db.session import session_scope
from workers.deid.outcome import DeidOutcome

if TYPE_CHECKING:
    from workers.deid.engine import Deidentifier

log = logging.getLogger(__name__)

OnCommit = Callable[[Session, "InstanceResult"], None]


@dataclass
class InstanceResult:
    """PHI-free summary of one instance's outcome (pseudonyms, codes, counts only)."""

    status: Literal["written", "refused"]
    out_path: Path | None = None
    reason_code: str | None = None
    reason: str | None = None
    quarantine_path: Path | None = None
    patient_pseudonym: str | None = None
    pseudo_study_uid: str | None = None  # the de-identified UIDs, never the originals
    pseudo_series_uid: str | None = None
    pseudo_sop_instance_uid: str | None = None
    pixel_action: str | None = None


def output_path(out_root: Path, outcome: DeidOutcome) -> Path:
    """Pseudonymous layout: patient / study / series / instance; no original value in any name."""
    return (
        out_root
        / outcome.patient_pseudonym
        / outcome.study_instance_uid
        / outcome.series_instance_uid
        / f"{outcome.sop_instance_uid}.dcm"
    )


def quarantine_name(quarantine: Path) -> Path:
    """A random name: the spool name only promises no PHI, and a second refusal of the same
    content must not overwrite the first one's evidence."""
    return quarantine / f"{uuid.uuid4().hex}.dcm"


def quarantine_file(src: Path, dest: Path, exc: Rejected, *, source: str) -> Path:
    """Move a refused spool file to ``dest`` in quarantine, with a reason file beside it."""
    quarantine = dest.parent
    quarantine.mkdir(parents=True, exist_ok=True)
    reason = {
        "code": exc.code,
        "reason": exc.reason,
        "source": source,
        "refused_at": datetime.now(UTC).isoformat(),
    }
    tmp = dest.with_suffix(".json.tmp")
    with tmp.open("w") as fh:  # the reason must survive a crash as surely as the file
        fh.write(json.dumps(reason, indent=2))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, dest.with_suffix(".json"))
    move_durably(src, dest)  # fsyncs the file and both folders, across filesystems too
    return dest


def process_instance(
    src: Path,
    *,
    deidentifier: Deidentifier,
    db_url: str,
    keys: SiteKeys,
    out_root: Path,
    quarantine: Path | None,
    source: str,
    job_id: str | None,
    delete_source: bool,
    on_commit: OnCommit | None = None,
) -> InstanceResult:
    """De-identify ``src`` and commit its mappings; see the module docstring for the order.
    Timed as the ``deidentify`` stage; counted as de-identified here, as refused in ``_refuse``."""
    with metrics.time_stage("deidentify"):
        try:
            outcome = deidentifier.deidentify(src)
        except Rejected as exc:
            return _refuse(src, exc, db_url=db_url, keys=keys, quarantine=quarantine,
                           source=source, job_id=job_id, on_commit=on_commit)

        dest = output_path(out_root, outcome)
        deidentifier.write(outcome, dest)
        result = InstanceResult(
            status="written",
            out_path=dest,
            patient_pseudonym=outcome.patient_pseudonym,
            pseudo_study_uid=outcome.study_instance_uid,
            pseudo_series_uid=outcome.series_instance_uid,
            pseudo_sop_instance_uid=outcome.sop_instance_uid,
            pixel_action=outcome.pixel.action if outcome.pixel else None,
        )
        try:
            with session_scope(db_url) as session:
                AuditStore(session, keys).record_outcome(outcome, source=source, job_id=job_id)
                record_instance_actions(session, outcome)  # what was done to each attribute
                if on_commit is not None:
                    on_commit(session, result)
        except Rejected as exc:  # e.g. a pseudonym collision found at commit: fail closed
            with contextlib.suppress(FileNotFoundError):
                dest.unlink()
            return _refuse(src, exc, db_url=db_url, keys=keys, quarantine=quarantine,
                           source=source, job_id=job_id, on_commit=on_commit)
        except OperationalError as exc:
            raise Retryable(
                f"database unavailable while committing mappings ({type(exc.orig).__name__})"
            ) from None

        if delete_source:
            src.unlink(missing_ok=True)
            fsync_dir(src.parent)
        log.info("de-identified instance %s (patient %s, pixels %s)", outcome.sop_instance_uid,
                 outcome.patient_pseudonym, result.pixel_action)
        metrics.count_deidentified()
        return result


def _refuse(
    src: Path,
    exc: Rejected,
    *,
    db_url: str,
    keys: SiteKeys,
    quarantine: Path | None,
    source: str,
    job_id: str | None,
    on_commit: OnCommit | None,
) -> InstanceResult:
    # The refusal is committed before the file moves: a crash in between only repeats the
    # refusal on retry, while the reverse order could lose track of a quarantined file.
    qpath = quarantine_name(quarantine) if quarantine else None
    result = InstanceResult(status="refused", reason_code=exc.code, reason=exc.reason,
                            quarantine_path=qpath)
    try:
        with session_scope(db_url) as session:
            AuditStore(session, keys).log_event(
                "refused",
                actor=source,
                details={"code": exc.code, "reason": exc.reason, "job_id": job_id,
                         "quarantine": qpath.name if qpath else None},
            )
            if on_commit is not None:
                on_commit(session, result)
    except OperationalError as err:
        raise Retryable(
            f"database unavailable while recording a refusal ({type(err.orig).__name__})"
        ) from None
    if qpath is not None:
        quarantine_file(src, qpath, exc, source=source)
    log.warning("refused input: %s: %s", exc.code, exc.reason)
    metrics.count_refused("deidentify", exc.code or "rejected")
    return result
