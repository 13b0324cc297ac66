"""``deidgate audit verify|export-mapping|lookup|events|mappings``: the auditors' commands.

``lookup`` and ``export-mapping`` reveal originals on purpose (terminal / the CSV file); each is
committed to the audit log with its operator before anything is shown. Nothing here logs PHI.
"""

from __future__ import annotations

import csv
import getpass
import json
import os
from pathlib import Path
from typing import Annotated

import typer

from service.cli.common import exit_for, fail, state
from service.core.errors import DeidgateError
from service.core.fsync import fsync_dir

audit_app = typer.Typer(help="Audit log and pseudonym mappings.", no_args_is_help=True)

KINDS = ("patient", "study", "series", "instance", "accession", "uid")


def _operator() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry (containers): the caller must name themselves
        return ""


@audit_app.command("verify")
def verify(
    ctx: typer.Context,
    anchor: Annotated[list[str] | None, typer.Option(
        help="SEQ:HASH printed by an earlier verify and kept outside the database")] = None,
) -> None:
    """Check the hash chain; exit 1 naming every edited, deleted or reordered row."""
    from service.audit import AuditStore
    from service.db.session import session_scope

    anchors: list[tuple[int, str]] = []
    for a in anchor or []:
        seq, _, digest = a.partition(":")
        if not seq.isdigit() or len(digest) != 64:
            fail(f"--anchor must be SEQ:HASH (64 hex digits), got {a!r}")
        anchors.append((int(seq), digest))
    st = state(ctx)
    with session_scope(st.db_url()) as session:
        report = AuditStore(session, st.keys()).verify_chain(anchors=anchors)
    if report.ok:
        typer.echo(f"audit log intact: {report.events} events, head seq {report.head_seq}")
        typer.echo(f"anchor: {report.head_seq}:{report.head_hash}")
        return
    for line in report.lines():
        typer.echo(line)
    typer.echo(f"audit log BROKEN: {len(report.findings)} finding(s); first bad seq "
               f"{report.first_bad_seq}", err=True)
    raise typer.Exit(1)


@audit_app.command("export-mapping")
def export_mapping(
    ctx: typer.Context,
    kind: Annotated[str, typer.Option(help="|".join(KINDS))],
    out: Annotated[Path, typer.Option(help="CSV file (id_old,id_new), written 0600")],
    operator: Annotated[str | None, typer.Option(help="who exports (default: OS user)")] = None,
) -> None:
    """Write original -> pseudonym pairs for one kind (the MIDI-B validation format)."""
    from service.audit import AuditStore
    from service.db.session import session_scope

    if kind not in KINDS:
        fail(f"--kind must be one of {', '.join(KINDS)}")
    actor = operator or _operator()
    if not actor:
        fail("no OS user name; pass --operator")
    st = state(ctx)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        with session_scope(st.db_url()) as session:
            store = AuditStore(session, st.keys())
            count = store.count_mappings(kind)
            store.log_event("export-mapping", actor=actor, details={"kind": kind, "rows": count})
            session.commit()  # on record before any original is written out
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
                writer = csv.writer(fh)
                writer.writerow(["id_old", "id_new"])
                for old, new in store.export_mapping(kind):
                    writer.writerow([old, new])
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, out)
        fsync_dir(out.parent)  # the rename is in the folder: durable only once it is fsynced
    except DeidgateError as exc:
        tmp.unlink(missing_ok=True)
        exit_for(exc)
    typer.echo(f"exported {count} {kind} mapping(s) to {out}")


@audit_app.command("lookup")
def lookup(
    ctx: typer.Context,
    pseudonym: str,
    reason: Annotated[str, typer.Option(
        help="why this re-identification is needed (stored in clear: no names or IDs here)")],
    operator: Annotated[str | None, typer.Option(help="who asks (default: OS user)")] = None,
) -> None:
    """Re-identify a pseudonym. Logged (operator, reason, pseudonym) before it is shown."""
    from service.audit import AuditStore
    from service.db.session import session_scope

    st = state(ctx)
    try:
        with session_scope(st.db_url()) as session:
            found = AuditStore(session, st.keys()).lookup(
                pseudonym, reason=reason, actor=operator or _operator())
    except DeidgateError as exc:
        exit_for(exc)
    if not found:
        typer.echo(f"no mapping for pseudonym {pseudonym} (the lookup was logged)", err=True)
        raise typer.Exit(1)
    for kind, original in found:
        typer.echo(f"{kind}\t{original}")


@audit_app.command("events")
def events(
    ctx: typer.Context,
    kind: Annotated[str | None, typer.Option(help="only this kind, e.g. reidentify")] = None,
    limit: Annotated[int, typer.Option(help="newest N events")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
) -> None:
    """List audit events (no PHI: pseudonyms, counts, reasons, operators)."""
    from service.audit import AuditStore
    from service.db.session import session_scope

    st = state(ctx)
    with session_scope(st.db_url()) as session:
        rows = AuditStore(session, st.keys()).events(kind, limit=limit)
    for e in rows:
        at = e.at.isoformat() if e.at is not None else None
        if as_json:
            typer.echo(json.dumps({"seq": e.seq, "at": at, "kind": e.kind, "actor": e.actor,
                                   "details": e.details, "unreadable": list(e.unreadable)},
                                  sort_keys=True))
            continue
        line = (f"{e.seq if e.seq is not None else '?'}\t"
                f"{e.at.isoformat(timespec='seconds') if e.at is not None else '?'}\t"
                f"{e.kind}\t{e.actor}\t"
                f"{json.dumps(e.details, sort_keys=True) if e.details is not None else '?'}")
        if e.unreadable:  # edited past reading: `audit verify` names it
            line += f"\tUNREADABLE({','.join(e.unreadable)})"
        typer.echo(line)


@audit_app.command("mappings")
def mappings(
    ctx: typer.Context,
    pseudonym: Annotated[str | None, typer.Argument()] = None,
    patient: Annotated[str | None, typer.Option(help="every mapping of this patient pseudonym")]
    = None,
) -> None:
    """Mapping rows by pseudonym, without originals (kind, policy, source, job, time)."""
    from service.audit import AuditStore
    from service.db.session import session_scope

    if pseudonym is None and patient is None:
        fail("give a PSEUDONYM or --patient")
    st = state(ctx)
    with session_scope(st.db_url()) as session:
        rows = AuditStore(session, st.keys()).mappings(pseudonym, patient=patient)
    for m in rows:
        typer.echo(f"{m.kind}\t{m.pseudonym}\tpatient={m.patient_pseudonym}\t"
                   f"{m.policy_name}@{m.policy_version}\tsource={m.source}\tjob={m.job_id}\t"
                   f"{m.created_at.isoformat(timespec='seconds')}")
    if not rows:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")
