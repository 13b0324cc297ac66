"""``deidgate model register | rollback | list | score | export-scores | compare``.

The operational half of the toolkit: which model scores new exams (the registry in
``HOME/models``, ``workers/score/registry.py``), scoring a folder of de-identified exams into a
scores CSV (the input of ``evaluate``/``simulate``/``monitor``), exporting the stored results, and
comparing two models on the same exams, from stored results or by re-scoring the stored views.
Every output names the model, and the demo model as "synthetic demo model, not for clinical use".
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

import typer

from service.cli.common import exit_for, fail, state
from service.core.errors import DeidgateError


def _column(card: Any, taken: set[str]) -> str:
    """A ``score_<name>`` column name for a model (the scores CSV's pattern)."""
    base = re.sub(r"[^a-z0-9_-]", "-", f"{card.name}-{card.version}".lower())[:30].strip("-_")
    name, i = f"score_{base or 'model'}", 2
    while name in taken:
        name, i = f"score_{base}-{i}", i + 1
    taken.add(name)
    return name


def register_cmd(
    ctx: typer.Context,
    folder: Annotated[Path, typer.Argument(exists=True, file_okay=False,
                                           help="model folder: card.yaml + weights")],
    activate: Annotated[bool, typer.Option(help="make it the active model")] = True,
) -> None:
    """Validate a model folder (card, sha256 of the weights, the network loads), copy it into
    the registry and make it the active model; the previous one is kept for rollback."""
    from workers.score.registry import register

    settings = state(ctx).settings
    try:
        reg = register(settings, folder, activate=activate)
    except DeidgateError as exc:
        exit_for(exc)
    typer.echo(f"registered {reg.key}: {reg.card.display_name}, device UID "
               f"{reg.card.device_uid}" + (" (active)" if reg.active else ""))
    if settings.score_model is not None:
        typer.echo("note: DEIDGATE_SCORE_MODEL is set and overrides the registry", err=True)


def rollback_cmd(ctx: typer.Context) -> None:
    """Make the previously active model active again."""
    from workers.score.registry import rollback

    try:
        reg = rollback(state(ctx).settings)
    except DeidgateError as exc:
        exit_for(exc)
    typer.echo(f"active: {reg.key}: {reg.card.display_name}")


def list_cmd(ctx: typer.Context) -> None:
    """The registered models, oldest first; '*' marks the active one."""
    from workers.score.registry import active_folder, list_models

    settings = state(ctx).settings
    try:
        models = list_models(settings)
    except DeidgateError as exc:
        exit_for(exc)
    if settings.score_model is not None:
        typer.echo(f"DEIDGATE_SCORE_MODEL overrides the registry: {active_folder(settings)}")
    if not models:
        typer.echo("no registered model (deidgate model register FOLDER)")
    for m in models:
        c = m.card
        typer.echo(f"{'*' if m.active else ' '} {m.key}  {c.display_name}  "
                   f"{c.architecture.network or c.architecture.kind} "
                   f"{c.architecture.input.rows}x{c.architecture.input.cols}  "
                   f"preprocessing {c.preprocessing.version}  registered {m.registered_at}")


def _arrival(h: Any) -> str:
    """StudyDate + StudyTime as the scores CSV's local ISO time ('' when not recorded)."""
    d, t = str(h.get("StudyDate", "") or ""), str(h.get("StudyTime", "") or "")
    if len(d) != 8 or not d.isdigit():
        return ""
    t = (t.split(".")[0] + "000000")[:6] if t[:6].isdigit() else "000000"
    return f"{d[:4]}-{d[4:6]}-{d[6:]}T{t[:2]}:{t[2:4]}:{t[4:6]}"


def _exams_in(folder: Path) -> dict[str, tuple[str, str, str, list[Path]]]:
    """exam (study UID) -> (woman, vendor, arrival, view files) for every MG file in ``folder``."""
    from pydicom import dcmread

    exams: dict[str, tuple[str, str, str, list[Path]]] = {}
    for p in sorted(folder.rglob("*.dcm")):
        try:
            h = dcmread(p, stop_before_pixels=True)
        except Exception:  # noqa: S112 - not DICOM: not an exam view
            continue
        if str(h.get("Modality", "")) != "MG":
            continue
        key = str(h.StudyInstanceUID)
        entry = exams.setdefault(key, (str(h.get("PatientID", "")),
                                       str(h.get("Manufacturer", "") or ""), _arrival(h), []))
        entry[3].append(p)
    return exams


def _labels(path: Path | None) -> dict[str, int]:
    if path is None:
        return {}
    with path.open(newline="") as fh:
        return {r["study_uid"]: int(r["label"]) for r in csv.DictReader(fh)}


def _score_many(model_folder: Path, exams: dict[str, list[Path]], device: str,
                batch_size: int) -> dict[str, float]:
    from workers.score.infer import ExamInput, scorer_for_process

    scorer = scorer_for_process(model_folder, device, batch_size=batch_size)
    out = {}
    for r in scorer.score_exams(ExamInput(e, files) for e, files in exams.items()):
        if r.score is not None:
            out[r.exam_id] = float(r.score)
    return out


def _write_csv(path: Path, header: list[str], rows: Iterable[list[Any]]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for r in rows:
            w.writerow(r)
            n += 1
    return n


def score_cmd(
    ctx: typer.Context,
    folder: Annotated[Path, typer.Argument(exists=True, file_okay=False,
                                           help="folder of de-identified MG DICOM files")],
    out: Annotated[Path, typer.Option("--out", help="scores CSV to write")],
    model: Annotated[list[str] | None, typer.Option(
        "--model", help="model folder, registry key or 'active' (repeat to compare)")] = None,
    labels: Annotated[Path | None, typer.Option(
        exists=True, dir_okay=False, help="CSV study_uid,label: adds the label column")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda")] = "auto",
) -> None:
    """Score every exam under FOLDER into a scores CSV (evaluate/simulate/monitor's input)."""
    from workers.score.card import load_card
    from workers.score.registry import resolve

    settings = state(ctx).settings
    try:
        folders = [resolve(settings, m) for m in (model or ["active"])]
        cards = [load_card(f) for f in folders]
    except DeidgateError as exc:
        exit_for(exc)
    exams = _exams_in(folder)
    if not exams:
        fail(f"{folder}: no MG DICOM files", code=2)
    lab = _labels(labels)
    taken: set[str] = set()
    cols = ["score"] if len(folders) == 1 else [_column(c, taken) for c in cards]
    try:
        scores = [_score_many(f, {e: v[3] for e, v in exams.items()}, device,
                              settings.score_batch_size) for f in folders]
    except DeidgateError as exc:
        exit_for(exc)
    timed = all(v[2] for v in exams.values())  # the column is all or nothing
    header = ["exam", "woman", *cols, "vendor"] + (["arrival"] if timed else []) + \
        (["label"] if lab else [])
    rows = ([e, w, *[s[e] for s in scores], vendor] + ([arrival] if timed else [])
            + ([lab[e]] if lab else [])
            for e, (w, vendor, arrival, _) in exams.items()
            if all(e in s for s in scores) and (not lab or e in lab))
    n = _write_csv(out, header, rows)
    for c, col in zip(cards, cols, strict=True):
        typer.echo(f"{col}: {c.display_name}")
    typer.echo(f"wrote {out}: {n} exams")


def export_scores_cmd(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", help="scores CSV to write")],
    model: Annotated[str, typer.Option(help="model folder, registry key or 'active'")]
    = "active",
) -> None:
    """Write the stored results of one model as a scores CSV (exam, woman, score, arrival in
    UTC); add a label column from the site's reference standard to evaluate them."""
    from sqlalchemy import select

    from service.db.models.triage import ScoreResult, TriageEntry
    from service.db.session import session_scope
    from workers.score.card import load_card
    from workers.score.registry import resolve

    st = state(ctx)
    try:
        card = load_card(resolve(st.settings, model))
    except DeidgateError as exc:
        exit_for(exc)
    with session_scope(st.db_url()) as s:
        rows = list(s.execute(
            select(ScoreResult.exam, ScoreResult.patient_pseudonym, ScoreResult.score,
                   TriageEntry.arrived_at)
            .outerjoin(TriageEntry, TriageEntry.exam == ScoreResult.exam)
            .where(ScoreResult.model_sha256 == card.weights.sha256)
            .order_by(ScoreResult.id)))
    n = _write_csv(out, ["exam", "woman", "score", "arrival"], (
        [e, w, sc, a.replace(tzinfo=None).isoformat(timespec="seconds") if a else ""]
        for e, w, sc, a in rows))
    typer.echo(f"wrote {out}: {n} exams scored by {card.display_name}")


def _midranks(v: list[float]) -> list[float]:
    """Ties share their mean rank (Spearman's rho is Pearson's r on these)."""
    from scipy.stats import rankdata  # scipy only for the compare command

    return [float(r) for r in rankdata(v, method="average")]


def _pearson(a: list[float], b: list[float]) -> float:
    n = len(a)
    ma, mb = sum(a) / n, sum(b) / n
    va = sum((x - ma) ** 2 for x in a)
    vb = sum((y - mb) ** 2 for y in b)
    if va == 0 or vb == 0:
        return math.nan
    return sum((x - ma) * (y - mb) for x, y in zip(a, b, strict=True)) / math.sqrt(va * vb)


def compare_cmd(
    ctx: typer.Context,
    model_a: Annotated[str, typer.Argument(help="model folder, registry key or 'active'")],
    model_b: Annotated[str, typer.Argument(help="model folder, registry key or 'active'")],
    rescore: Annotated[bool, typer.Option(
        help="score the stored exams' views with both models (else: stored results only)")]
    = False,
    out: Annotated[Path | None, typer.Option(help="paired scores CSV (score_<a>, score_<b>)")]
    = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda")] = "auto",
) -> None:
    """Compare two models' scores on the same exams: agreement of scores and categories."""
    from sqlalchemy import select

    from service.db.models.triage import ScoreResult
    from service.db.session import session_scope
    from workers.score.aggregate import categorise
    from workers.score.card import load_card
    from workers.score.registry import resolve

    st = state(ctx)
    try:
        folders = [resolve(st.settings, m) for m in (model_a, model_b)]
        cards = [load_card(f) for f in folders]
    except DeidgateError as exc:
        exit_for(exc)
    with session_scope(st.db_url()) as s:
        results = list(s.scalars(select(ScoreResult).order_by(ScoreResult.id)))
        stored: list[dict[str, float]] = [
            {r.exam: r.score for r in results if r.model_sha256 == c.weights.sha256}
            for c in cards]
        women = {r.exam: r.patient_pseudonym for r in results}
        views = {r.exam: [st.settings.output_dir / v["file"] for v in r.views if v.get("file")]
                 for r in results}
    if rescore:
        exams = {e: [p for p in files if p.is_file()] for e, files in views.items()}
        exams = {e: f for e, f in exams.items() if f}
        try:
            scores = [_score_many(f, exams, device, st.settings.score_batch_size)
                      for f in folders]
        except DeidgateError as exc:
            exit_for(exc)
    else:
        scores = stored
    common = [e for e in scores[0] if e in scores[1]]
    how = "re-scored" if rescore else "stored results"
    typer.echo(f"A: {cards[0].display_name}\nB: {cards[1].display_name}")
    if not common:
        fail(f"no exam has scores of both models ({how}); try --rescore", code=2)
    a = [scores[0][e] for e in common]
    b = [scores[1][e] for e in common]
    diffs = sorted(abs(x - y) for x, y in zip(a, b, strict=True))
    typer.echo(f"{len(common)} exams ({how})")
    rho = _pearson(_midranks(a), _midranks(b))
    typer.echo(f"Pearson r {_pearson(a, b):.3f}, Spearman rho {rho:.3f}")
    typer.echo(f"|A - B|: median {diffs[len(diffs) // 2]:.4f}, max {diffs[-1]:.4f}")
    cats = ("likely_normal", "standard", "priority")
    table = {(x, y): 0 for x in cats for y in cats}
    for sa, sb in zip(a, b, strict=True):
        ca, cb = categorise(sa, cards[0].thresholds), categorise(sb, cards[1].thresholds)
        table[(str(ca), str(cb))] += 1
    agree = sum(table[(c, c)] for c in cats)
    typer.echo(f"same category {agree}/{len(common)}; rows A, columns B:")
    typer.echo(f"{'':>15}" + "".join(f"{c:>15}" for c in cats))
    for row in cats:
        typer.echo(f"{row:>15}" + "".join(f"{table[(row, col)]:>15}" for col in cats))
    if out is not None:
        taken: set[str] = set()
        cols = [_column(c, taken) for c in cards]
        n = _write_csv(out, ["exam", "woman", *cols],
                       ([e, women.get(e, e), scores[0][e], scores[1][e]] for e in common))
        typer.echo(f"wrote {out}: {n} exams (add a label column, then deidgate model evaluate)")


def register(model_app: typer.Typer) -> None:
    model_app.command("register")(register_cmd)
    model_app.command("rollback")(rollback_cmd)
    model_app.command("list")(list_cmd)
    model_app.command("score")(score_cmd)
    model_app.command("export-scores")(export_scores_cmd)
    model_app.command("compare")(compare_cmd)
