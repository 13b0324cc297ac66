"""``deidgate demo``: the whole gateway on this machine against a sample PACS, from one command.

Starts what ``deidgate serve`` starts (API, listener, worker), plus a sample PACS holding
synthetic screening exams; registers it as a PACS node and allows its AE; creates an admin and a
staff token; makes the synthetic demo model the active scoring model (trained and cached in the
data folder on first use: ``synthetic/demo_model.py``); queues an extraction job for every
sample exam; shows progress; ends with the exams ranked as the worklist ranks them, labelled
"synthetic demo model, not for clinical use"; prints where to look. Keeps serving until Ctrl-C
(``--exit-when-done`` for CI).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from typing import Annotated, Any

import typer

from service.cli.common import exit_for, fail, state
from service.core import logs
from service.core.config import Settings
from service.core.errors import DeidgateError
from service.db.states import JobState

NODE = "sample-pacs"
PACS_AE = "SAMPLEPACS"


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def demo(
    ctx: typer.Context,
    exams: Annotated[int, typer.Option("--exams", help="synthetic 4-view exams in the PACS")]
    = 8,
    full_size: Annotated[bool, typer.Option("--full-size", help="4096x3328 images (slow)")]
    = False,
    exit_when_done: Annotated[bool, typer.Option("--exit-when-done")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="give up waiting after s")] = 900,
    score: Annotated[bool, typer.Option(
        "--score/--no-score", help="score the exams (the synthetic demo model, trained and "
                                   "cached in the data folder on first use)")] = True,
) -> None:
    """Run the gateway against a sample PACS of synthetic exams, extract and score them all."""
    logs.install(level=logging.WARNING)  # the PHI filters on whatever writes lines
    # the server-less broker has no host name; kombu's warning about it is noise in a demo
    logging.getLogger("kombu.connection").setLevel(logging.ERROR)
    from service.cli.common import stop_signals
    from service.cli.job import _progress_line, wait_for
    from service.cli.serve import start_embedded
    from service.core.security import create_token
    from service.db.session import session_scope
    from service.dicom import admin
    from service.jobs import ops
    from synthetic.pacs import SamplePacs, populate

    st = state(ctx)
    settings = st.settings
    settings.ensure_dirs()
    db_url = st.db_url()
    keys = st.keys()
    typer.echo(f"data folder  {settings.home}")
    model = _DemoModelThread(settings) if score else None  # trains while the PACS fills
    typer.echo(f"generating {exams} synthetic screening exams for the sample PACS ...")
    folder = settings.home / "sample-pacs"
    accessions = populate(folder, exams, full_size=full_size)
    if model is not None:
        model.activate()

    if not _port_free(settings.api_host, settings.api_port):
        settings.api_port = _free_port()
    with session_scope(db_url) as s:
        admin.seed(s, settings)
        local = admin.get_local_ae(s, settings)
        if not _port_free(local.host, local.port):
            local = admin.set_local_ae(s, settings, port=_free_port())
    with stop_signals() as stop, SamplePacs(folder, ae_title=PACS_AE) as pacs:
        pacs.add_destination(local.ae_title, "127.0.0.1", local.port)
        with session_scope(db_url) as s:
            with contextlib.suppress(admin.UnknownNode):
                admin.remove_node(s, NODE)
            admin.add_node(s, NODE, ae_title=PACS_AE, host="127.0.0.1", port=pacs.port)
            if not any(a.ae_title == PACS_AE for a in admin.list_allowed(s)):
                admin.allow(s, PACS_AE, "127.0.0.1")
            stamp = time.strftime("%Y%m%d-%H%M%S")
            admin_tok = create_token(s, role="admin", name=f"demo-admin-{stamp}").token
            staff_tok = create_token(s, role="staff", name=f"demo-staff-{stamp}").token
            from service.web.accounts import create_demo_users

            web_users = create_demo_users(s, stamp.replace("-", ""))
        # the demo serves plain http on this machine: browsers drop Secure cookies there
        settings.environment = "development"
        (settings.home / "logs").mkdir(exist_ok=True)
        worker_log = (settings.home / "logs" / "worker.log").open("ab")
        from service.audit.process import start_process
        from service.core.metrics import reset_dir

        reset_dir(settings)  # the whole service starts here (as `serve` does)
        start_process(settings, "demo")
        emb = start_embedded(settings, db_url, log_file=worker_log)
        try:
            typer.echo(f"sample PACS  AE {PACS_AE} on 127.0.0.1:{pacs.port} "
                       f"({len(pacs.studies)} studies)")
            typer.echo(f"listener     AE {local.ae_title} on {local.host}:{local.port}")
            try:
                req = ops.parse_job_request({"pacs": NODE, "accession_numbers": accessions})
                with session_scope(db_url) as s:
                    view = ops.submit_job(s, settings, keys, req, actor="demo")
            except DeidgateError as exc:
                exit_for(exc)
            typer.echo(f"job          {view.id} queued for {len(accessions)} exams")
            v = wait_for(db_url, view.id, timeout=timeout)
            typer.echo(_progress_line(v))
            if model is not None:
                print_worklist(db_url, view.id)
            url = emb.api_url
            typer.echo("")
            typer.echo(f"API          {url}/api/v1   (interactive docs: {url}/docs)")
            typer.echo(f"admin token  {admin_tok}")
            typer.echo(f"staff token  {staff_tok}")
            typer.echo(f"try          curl -H 'Authorization: Bearer {staff_tok}' "
                       f"{url}/api/v1/jobs/{view.id}")
            typer.echo(f"web UI       {url}/   sign in (passwords shown only this once):")
            for role, (name, password) in web_users.items():
                typer.echo(f"  {role.value:<8}   user {name}   password {password}")
            typer.echo(f"output       {settings.output_dir}")
            typer.echo(f"worker log   {settings.home / 'logs' / 'worker.log'}")
            if v.state != JobState.DONE:
                if exit_when_done:
                    fail(f"job {v.id} {v.state}: {v.reason or 'not finished in time'}")
                typer.echo(f"job {v.id} {v.state}: {v.reason or 'not finished in time'}",
                           err=True)
            if not exit_when_done:
                typer.echo("serving; Ctrl-C stops")
                emb.run_until(stop)
        finally:
            typer.echo("stopping ...", err=True)
            emb.stop()
            worker_log.close()


class _DemoModelThread:
    """The demo model, built in a thread (first run: minutes on the CPU; then cached) while the
    sample PACS is generated; ``activate`` waits for it and makes it the active model unless the
    site configured or registered a model of its own."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.result: Any = None
        self.error: BaseException | None = None
        self.configured: str | None = None
        self.thread = threading.Thread(target=self._run, name="demo-model", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        from synthetic.demo_model import demo_model_dir, ensure_demo_model
        from workers.score.card import load_card
        from workers.score.registry import active_folder

        try:
            current = active_folder(self.settings)
            if current is not None and not load_card(current).synthetic_demo:
                self.configured = load_card(current).display_name  # the site's own: no demo
                return
            if not demo_model_dir(self.settings.home).exists():
                typer.echo("training the synthetic demo model on the CPU (first run only; "
                           "cached in the data folder) ...")
            self.result = ensure_demo_model(self.settings.home)
        except BaseException as exc:  # reported by activate(), in the main thread
            self.error = exc

    def activate(self) -> None:
        from workers.score.registry import register

        self.thread.join()
        if self.error is not None:
            raise self.error
        if self.configured is not None:
            typer.echo(f"scoring      {self.configured} (configured)")
            return
        reg = register(self.settings, self.result.folder)
        how = f"trained in {self.result.seconds:.0f} s" if self.result.trained else "cached"
        typer.echo(f"scoring      {reg.card.display_name} ({how})")


def print_worklist(db_url: str, job_id: str) -> None:
    """The job's exams as the worklist ranks them (score, highest first), labelled by model."""
    from sqlalchemy import select

    from service.db.models.jobs import JobStudy
    from service.db.models.triage import ScoreResult, TriageEntry
    from service.db.session import session_scope
    from workers.score.card import DEMO_NOTICE

    with session_scope(db_url) as s:
        rows = list(s.execute(
            select(TriageEntry, ScoreResult)
            .join(ScoreResult, ScoreResult.id == TriageEntry.result_id)
            .join(JobStudy, JobStudy.pseudo_uid == TriageEntry.exam)
            .where(JobStudy.job_id == job_id)
            .order_by(TriageEntry.score.desc(), TriageEntry.arrived_at.asc())).tuples())
        unscored = [st.reason for st in s.scalars(select(JobStudy).where(
            JobStudy.job_id == job_id, JobStudy.reason.like("not scored%")))]
    typer.echo("")
    if not rows:
        typer.echo("worklist     no exam was scored" + (f" ({unscored[0]})" if unscored else ""))
        return
    models = sorted({f"{r.model_name} {r.model_version}" + (f" ({DEMO_NOTICE})" if r.demo else "")
                     for _, r in rows})
    typer.echo(f"worklist     ranked by {', '.join(models)}")
    if any(r.demo for _, r in rows):
        typer.echo(f"             {DEMO_NOTICE.upper()}: scores mean nothing about any woman")
    typer.echo(f"  {'rank':>4}  {'score':>6}  {'category':<13}  {'views':>5}  exam (pseudonymous)")
    for i, (e, r) in enumerate(rows, 1):
        note = f"  [{r.note}]" if r.note else ""
        typer.echo(f"  {i:>4}  {e.score:6.3f}  {e.category:<13}  {len(r.views):>5}  "
                   f"{e.exam}{note}")
    if unscored:
        typer.echo(f"  {len(unscored)} exam(s) not scored: {unscored[0]}")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
