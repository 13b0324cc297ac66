"""``deidgate job submit|list|show|cancel|retry|dead-letters|retry-dead``.

The same operations the REST API calls (service.jobs.ops). Values given on the command line or
in ``--from-file`` are PHI: they go into the sealed request and are never echoed back.
"""

from __future__ import annotations

import json
import time
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import typer

from service.cli.common import cli_actor, exit_for, fail, is_tty, state, transact
from service.core.errors import DeidgateError
from service.db.states import TERMINAL_JOB_STATES, JobState

job_app = typer.Typer(help="Extraction jobs: pull studies from a PACS and de-identify them.",
                      no_args_is_help=True)

FILE_KINDS = {"accession": "accession_numbers", "patient-id": "patient_ids",
              "study-uid": "study_instance_uids"}


def _read_values(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read {path.name}: {type(exc).__name__}")
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def build_request(
    *, pacs: str, accession: list[str], patient_id: list[str], study_uid: list[str],
    date_from: str | None, date_to: str | None, modality: str, from_file: Path | None,
    file_kind: str, policy: str | None, destination: str | None,
    modalities: str | None = None,
) -> dict[str, Any]:
    data: dict[str, Any] = {"pacs": pacs, "policy": policy, "destination": destination}
    if modalities:
        data["modalities"] = [m.strip() for m in modalities.split(",") if m.strip()]
    lists = {"accession_numbers": list(accession), "patient_ids": list(patient_id),
             "study_instance_uids": list(study_uid)}
    if from_file is not None:
        if file_kind not in FILE_KINDS:
            fail(f"--file-kind must be one of {', '.join(FILE_KINDS)}")
        lists[FILE_KINDS[file_kind]] += _read_values(from_file)
    for k, v in lists.items():
        if v:
            data[k] = v
    if date_from or date_to:
        if not (date_from and date_to):
            fail("--from and --to go together")
        try:
            data["query"] = {"modality": modality, "date_from": date.fromisoformat(date_from),
                             "date_to": date.fromisoformat(date_to)}
        except ValueError:
            fail("--from/--to: dates are YYYY-MM-DD")
    return data


def _progress_line(v: Any) -> str:
    c = v.counts
    return (f"{v.state}: studies {c.studies_complete}/{c.studies_found} complete"
            f"{f', {c.studies_failed} failed' if c.studies_failed else ''}"
            f"{f', {c.studies_scored} scored' if c.studies_scored else ''}; instances "
            f"{c.instances_deidentified + c.instances_refused}/{c.instances_expected} done, "
            f"{c.instances_received} received, {c.instances_refused} refused"
            f"{f', {c.instances_skipped} skipped' if c.instances_skipped else ''}")


def poll_interval(elapsed: float) -> float:
    """How long ``wait_for`` sleeps between looks at the job: short at first (a job of a few
    studies takes seconds, and a fixed 1 s poll added half a second to each on average), 1 s
    once the job has run a minute (one small query per second is then nothing next to it)."""
    return 0.05 if elapsed < 5 else 0.25 if elapsed < 60 else 1.0


VIEW_EVERY_S = 1.0  # the full view (counts over the job's studies and instances) at most this often


def wait_for(db_url: str, job_id: str, *, timeout: float | None = None,
             interval: float | None = None, show: bool = True) -> Any:
    """Poll the job until it is finished; a progress bar on a terminal, lines otherwise.
    ``interval``: a fixed poll period (default: ``poll_interval``)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from service.db.session import get_sessionmaker
    from service.jobs import ops

    started = time.monotonic()
    deadline = None if timeout is None else started + timeout
    sessions = get_sessionmaker(db_url)
    last = ""
    bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/"
                   "{task.total}"), TimeElapsedColumn(), transient=False,
                   disable=not (show and is_tty()))
    with bar:
        task = bar.add_task("queued", total=None)
        viewed = -VIEW_EVERY_S
        while True:
            # Each look reads the job's state alone; the view, whose counts aggregate every
            # instance of the job, once a second and at the end: polling stays cheap for the
            # gateway's own CPU, which a fast look at a busy job would otherwise take from it.
            with sessions() as s:
                current = ops.job_state(s, job_id)
            if current is None:
                fail(f"no job with id {job_id!r}")
            now = time.monotonic()
            past = deadline is not None and now > deadline
            if current in TERMINAL_JOB_STATES or past or now - viewed >= VIEW_EVERY_S:
                viewed = now
                with sessions() as s:
                    v = ops.get_job(s, job_id)
                if v is None:
                    fail(f"no job with id {job_id!r}")
                c = v.counts
                bar.update(task, description=v.state, total=c.instances_expected or None,
                           completed=c.instances_deidentified + c.instances_refused)
                line = _progress_line(v)
                if show and not is_tty() and line != last:
                    typer.echo(line, err=True)
                    last = line
                if v.state in TERMINAL_JOB_STATES or past:
                    return v
            time.sleep(interval if interval is not None else poll_interval(now - started))


@job_app.command("submit")
def submit(
    ctx: typer.Context,
    pacs: Annotated[str, typer.Option("--pacs", help="source PACS node name")],
    accession: Annotated[list[str], typer.Option("--accession", help="accession number (repeat)")]
    = [],  # noqa: B006 - typer needs a literal default
    patient_id: Annotated[list[str], typer.Option("--patient-id", help="patient ID (repeat)")]
    = [],  # noqa: B006
    study_uid: Annotated[list[str], typer.Option("--study-uid", help="study UID (repeat)")]
    = [],  # noqa: B006
    date_from: Annotated[str | None, typer.Option("--from", help="study date from, YYYY-MM-DD")]
    = None,
    date_to: Annotated[str | None, typer.Option("--to", help="study date to, YYYY-MM-DD")] = None,
    modality: Annotated[str, typer.Option("--modality")] = "MG",
    from_file: Annotated[Path | None, typer.Option("--from-file", help="one value per line")]
    = None,
    file_kind: Annotated[str, typer.Option("--file-kind", help="accession|patient-id|study-uid")]
    = "accession",
    policy: Annotated[str | None, typer.Option("--policy")] = None,
    destination: Annotated[str | None, typer.Option("--destination", help="research PACS node")]
    = None,
    modalities: Annotated[str | None, typer.Option(
        "--modalities", help="retrieve only series of these modalities, comma-separated "
                             "(default: what the policy accepts, MG for mammography)")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="show progress; exit when finished")]
    = False,
    timeout: Annotated[float | None, typer.Option("--timeout", help="give up waiting after s")]
    = None,
) -> None:
    """Queue an extraction job and print its id."""
    from service.db.session import session_scope
    from service.jobs import ops

    st = state(ctx)
    data = build_request(pacs=pacs, accession=accession, patient_id=patient_id,
                         study_uid=study_uid, date_from=date_from, date_to=date_to,
                         modality=modality, from_file=from_file, file_kind=file_kind,
                         policy=policy, destination=destination, modalities=modalities)
    try:
        req = ops.parse_job_request(data)
        with session_scope(st.db_url()) as s:
            view = ops.submit_job(s, st.settings, st.keys(), req, actor=cli_actor())
    except DeidgateError as exc:
        exit_for(exc)
    typer.echo(view.id)
    if wait:
        _finish(wait_for(st.db_url(), view.id, timeout=timeout))


def _finish(v: Any) -> None:
    typer.echo(_progress_line(v), err=True)
    if v.state == JobState.DONE:
        raise typer.Exit(0)
    if v.state in (JobState.FAILED, JobState.CANCELLED):
        fail(f"job {v.id} {v.state}: {v.reason or 'no reason recorded'}")
    fail(f"job {v.id} still {v.state} after the timeout", code=3)


@job_app.command("wait")
def wait_cmd(ctx: typer.Context, job_id: str,
             timeout: Annotated[float | None, typer.Option("--timeout")] = None) -> None:
    """Wait for a job with a progress bar; exit 0 when done, non-zero with the reason."""
    _finish(wait_for(state(ctx).db_url(), job_id, timeout=timeout))


@job_app.command("list")
def list_cmd(ctx: typer.Context,
             job_state: Annotated[JobState | None, typer.Option("--state")] = None,
             limit: Annotated[int, typer.Option("--limit")] = 50,
             as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Jobs, newest first."""
    from service.db.session import session_scope
    from service.jobs import ops

    with session_scope(state(ctx).db_url()) as s:
        views = ops.list_jobs(s, state=job_state, limit=limit)
    if as_json:
        typer.echo(json.dumps([v.model_dump(mode="json") for v in views], indent=2))
        return
    for v in views:
        typer.echo(f"{v.id}  {v.created_at:%Y-%m-%d %H:%M}  {v.pacs:<12} {_progress_line(v)}")


@job_app.command("show")
def show(ctx: typer.Context, job_id: str,
         as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """One job with per-study progress (pseudonymous study UIDs only)."""
    from service.db.session import session_scope
    from service.jobs import ops

    with session_scope(state(ctx).db_url()) as s:
        v = ops.get_job(s, job_id)
    if v is None:
        fail(f"no job with id {job_id!r}")
    if as_json:
        typer.echo(v.model_dump_json(indent=2))
        return
    typer.echo(f"job {v.id}  pacs {v.pacs}  policy {v.policy}  "
               f"{v.selector} x{v.requested}")
    typer.echo(_progress_line(v))
    if v.reason:
        typer.echo(f"reason: {v.reason}")
    for sv in v.studies:
        typer.echo(f"  study {sv.index:>3}  {sv.state:<15} {sv.deidentified}/{sv.expected} "
                   f"de-identified  {sv.study_uid or '-'}"
                   f"{'  (' + sv.reason + ')' if sv.reason else ''}")
    for d in v.dead_letters:
        typer.echo(f"  dead letter {d.id} [{d.state}] {d.task}: {d.reason}")


@job_app.command("cancel")
def cancel(ctx: typer.Context, job_id: str) -> None:
    """Stop resolving and retrieving (instances already received are still de-identified)."""
    from service.jobs import ops

    st = state(ctx)
    v = transact(ctx, lambda s: ops.cancel_job(s, job_id, actor=cli_actor(), keys=st.keys()))
    typer.echo(f"job {v.id} {v.state}")


@job_app.command("retry")
def retry(ctx: typer.Context, job_id: str,
          wait: Annotated[bool, typer.Option("--wait")] = False) -> None:
    """Retry the failed parts of a finished job (failed studies, dead-lettered instances)."""
    from service.jobs import ops

    st = state(ctx)
    v = transact(ctx, lambda s: ops.retry_job(s, job_id, actor=cli_actor(), settings=st.settings,
                                              keys=st.keys()))
    typer.echo(f"job {v.id} {v.state}")
    if wait:
        _finish(wait_for(st.db_url(), job_id))


@job_app.command("dead-letters")
def dead_letters(ctx: typer.Context,
                 job_id: Annotated[str | None, typer.Option("--job")] = None) -> None:
    """Tasks that kept failing, with their reasons."""
    from service.db.session import session_scope
    from service.jobs import ops

    with session_scope(state(ctx).db_url()) as s:
        for d in ops.list_dead_letters(s, job_id=job_id):
            typer.echo(f"{d.id}  [{d.state}]  {d.task}  attempts={d.attempts}  {d.reason}")


@job_app.command("retry-dead")
def retry_dead(ctx: typer.Context, dead_letter_id: int) -> None:
    """Re-queue one dead-lettered task."""
    from service.jobs import ops

    st = state(ctx)
    d = transact(ctx, lambda s: ops.retry_dead_letter(s, st.settings, dead_letter_id,
                                                      actor=cli_actor()))
    typer.echo(f"dead letter {d.id} {d.state}")


def register(app: typer.Typer) -> None:
    app.add_typer(job_app, name="job")
