"""``deidgate deidentify``: de-identify files and folders under a policy, never stopping a batch.

The report and the terminal name inputs by their position in the sorted input list and, for
refused inputs, by the SHA-256 of their bytes, never by path: export folders are often named
``LASTNAME_ID_VIEW.dcm`` and a report is a document that travels.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from service.cli import common
from service.core import logs
from service.core.errors import DeidgateError, Rejected, error_code

log = logging.getLogger(__name__)


def iter_inputs(paths: list[Path]) -> Iterator[Path]:
    """Files in the given order; folders recursively in sorted order (hidden files skipped)."""
    for p in paths:
        if p.is_dir():
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for f in sorted(files):
                    if not f.startswith("."):
                        yield Path(root) / f
        else:
            yield p


def _sha256(path: Path) -> str | None:
    try:
        h = hashlib.sha256()
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()
    except OSError:
        return None


def run_batch(
    inputs: list[Path],
    *,
    out: Path,
    policy_ref: str,
    state: Any,
    progress: bool,
) -> tuple[dict[str, Any], int]:
    """De-identify every input; returns the report and the exit status."""
    from service.audit.store import AuditStore
    from service.db.session import session_scope
    from workers.deid.engine import Deidentifier
    from workers.deid.pipeline import InstanceResult, process_instance
    from workers.deid.policy import load_policy

    settings = state.settings
    policy = load_policy(policy_ref)
    keys = state.keys()
    db_url = state.db_url()
    deidentifier = Deidentifier(policy, keys, project=settings.project)
    out.mkdir(parents=True, exist_ok=True)

    entries: list[dict[str, Any]] = []
    counts: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    started = datetime.now(UTC)

    def handle(index: int, path: Path) -> None:
        entry: dict[str, Any] = {"input": index}
        try:
            if not path.is_file():
                raise Rejected("input is not a readable regular file", code="not-a-file")
            res: InstanceResult = process_instance(
                path, deidentifier=deidentifier, db_url=db_url, keys=keys, out_root=out,
                quarantine=None, source="cli", job_id=None, delete_source=False,
            )
        except Rejected as exc:
            res = InstanceResult(status="refused", reason_code=exc.code, reason=exc.reason)
        except DeidgateError as exc:
            res = InstanceResult(status="refused", reason_code=exc.code, reason=exc.reason)
            entry["status"] = "error"
        except Exception as exc:  # a bug, or the machine's fault (disk full): the batch goes on;
            # it fails the exit status, and the line names the type and code, never the text
            log.error("internal error on input #%d (%s)", index, logs.failure(exc))
            entry.update(status="error", code="internal-error", reason=error_code(exc))
            counts["error"] += 1
            typer.echo(f"internal error on input #{index}: {type(exc).__name__}", err=True)
            entries.append(entry)
            return
        entry.setdefault("status", res.status)
        if res.status == "written" and res.out_path is not None:
            entry["output"] = str(res.out_path.relative_to(out))
            entry["pixels"] = res.pixel_action
        else:
            entry.update(code=res.reason_code, reason=res.reason, input_sha256=_sha256(path))
            reasons[res.reason_code or "unknown"] += 1
            sha = (entry["input_sha256"] or "unreadable")[:16]
            typer.echo(f"refused input #{index} (sha256 {sha}): {res.reason_code}: {res.reason}",
                       err=True)
        counts[entry["status"]] += 1
        entries.append(entry)

    all_inputs = list(iter_inputs(inputs))
    if progress and len(all_inputs) > 1:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        with Progress("[progress.description]{task.description}", BarColumn(),
                      MofNCompleteColumn(), TimeRemainingColumn(), transient=True) as bar:
            task = bar.add_task("de-identifying", total=len(all_inputs))
            for i, p in enumerate(all_inputs):
                handle(i, p)
                bar.advance(task)
    else:
        for i, p in enumerate(all_inputs):
            handle(i, p)

    report = {
        "policy": {"name": policy.name, "version": policy.version},
        "started_at": started.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "counts": {"inputs": len(all_inputs), **counts},
        "refusal_reasons": dict(reasons),
        "instances": entries,
    }
    with session_scope(db_url) as session:
        AuditStore(session, keys).log_event(
            "batch-deidentified",
            actor=common.cli_actor(),
            details={"policy": policy.name, "policy_version": policy.version,
                     "counts": report["counts"], "refusal_reasons": dict(reasons)},
        )
    return report, (3 if counts["error"] else 0)


def deidentify(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(help="DICOM files and folders (recursive)")],
    out: Annotated[Path, typer.Option("--out", help="output folder")],
    policy: Annotated[
        str | None, typer.Option(help="policy name in policies/ (file stem) or a YAML file")
    ] = None,
    report: Annotated[Path | None, typer.Option(help="write a JSON report here")] = None,
) -> None:
    """De-identify DICOM files under a policy. Refused inputs are listed, never written."""
    st = common.state(ctx)
    for p in paths:
        if not p.exists():
            common.fail(f"input #{paths.index(p)} does not exist", code=2)
    try:
        rep, status = run_batch(paths, out=out, policy_ref=policy or st.settings.default_policy,
                                state=st, progress=common.is_tty())
    except DeidgateError as exc:
        common.exit_for(exc)
    c = rep["counts"]
    typer.echo(
        f"{c.get('written', 0)} written, {c.get('refused', 0)} refused, "
        f"{c.get('error', 0)} errors, of {c['inputs']} inputs -> {out}",
        err=True,
    )
    if report is not None:
        report.write_text(json.dumps(rep, indent=2))
    raise typer.Exit(status)


def register(app: typer.Typer) -> None:
    app.command("deidentify")(deidentify)
