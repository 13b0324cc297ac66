"""``deidgate model evaluate | simulate | monitor``: the model toolkit's statistics commands.

They read a scores CSV (format: workers/score/table.py), never the database, so a site can run
them on an export, on the demo's scores, or on a candidate model's scores before registering it.
Each writes PNGs, a JSON of every figure and a self-contained HTML report into ``--out``.

``register(model_app)`` adds them to the ``deidgate model`` sub-app (service/cli/model.py); this
module is therefore skipped by the root command's discovery. The statistics libraries (scipy,
matplotlib) are imported inside the commands so that ``deidgate --help`` stays quick.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from service.cli import common
from service.core.errors import DeidgateError

if TYPE_CHECKING:
    from workers.score.evaluate import ModelInfo
    from workers.score.table import ScoreTable

Out = Annotated[Path, typer.Option("--out", help="Folder for the PNGs, JSON and HTML report.")]
Scores = Annotated[Path, typer.Argument(help="Scores CSV (exam, woman, score, label, ...).")]
Card = Annotated[Path | None, typer.Option(help="Model card YAML: name, version, thresholds.")]
Thresholds = Annotated[list[str] | None, typer.Option(
    "--threshold", help="NAME=VALUE operating threshold (flag if score >= VALUE); repeatable, "
                        "adds to or overrides the card's.")]
Seed = Annotated[int, typer.Option(help="Seed of the bootstrap and the simulation.")]
Resamples = Annotated[int, typer.Option(min=1000, help="Bootstrap resamples (women).")]
Column = Annotated[list[str] | None, typer.Option(
    "--score-column", help="Score column(s) to use: 'score' or the <name> of score_<name>.")]


def _thresholds(pairs: list[str] | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            out[name.strip()] = float(value)
        except ValueError:
            common.fail(f"--threshold needs NAME=NUMBER, got {pair[:40]!r}", code=2)
    return out


def _info(card: Path | None, column: str, extra: dict[str, float], name: str | None,
          version: str | None) -> ModelInfo:
    from workers.score.evaluate import ModelInfo, model_info_from_card

    info = model_info_from_card(card) if card else ModelInfo(
        name or f"score column '{column}'", version or "(version not given)")
    return ModelInfo(name or info.name, version or info.version,
                     {**info.thresholds, **extra}, info.notice)


def _columns(table: ScoreTable, wanted: list[str] | None, most: int) -> list[str]:
    cols = list(table.scores)
    chosen = wanted or cols
    unknown = [c for c in chosen if c not in table.scores]
    if unknown:
        common.fail(f"no score column {unknown[0][:40]!r} in {table.source} "
                    f"(has: {', '.join(cols)})", code=2)
    if len(chosen) > most:
        common.fail(f"{table.source} has {len(chosen)} score columns; choose at most {most} "
                    "with --score-column", code=2)
    return chosen


def _done(paths: list[Path]) -> None:
    for p in paths:
        typer.echo(f"wrote {p}")


def evaluate(
    scores: Scores,
    out: Out,
    compare: Annotated[Path | None, typer.Option(
        help="A second model's scores CSV on the same exams (joined on exam).")] = None,
    card: Card = None,
    card_b: Annotated[Path | None, typer.Option(help="The second model's card.")] = None,
    model_name: Annotated[str | None, typer.Option(help="Name when there is no card.")] = None,
    model_version: Annotated[str | None, typer.Option(help="Version, no card.")] = None,
    threshold: Thresholds = None,
    score_column: Column = None,
    resamples: Resamples = 2000,
    seed: Seed = 0,
    bins: Annotated[int, typer.Option(min=2, max=50, help="Calibration bins.")] = 10,
) -> None:
    """AUC (clustered bootstrap, DeLong), sensitivity/specificity at the card's thresholds,
    calibration and subgroups; with two models, DeLong's paired test."""
    from workers.score.evaluate import evaluate as run
    from workers.score.report import evaluate_outputs
    from workers.score.table import join_on_exam, read_scores

    extra = _thresholds(threshold)  # options first: a typo fails before any file is read
    try:
        table = read_scores(scores)
        if compare is not None:
            table = join_on_exam(table, read_scores(compare), ("a", "b"))
        cols = _columns(table, score_column, 2)
        models = [(cols[0], _info(card, cols[0], extra, model_name, model_version))]
        if len(cols) == 2:
            models.append((cols[1], _info(card_b, cols[1], extra, None, None)))
        result = run(table, models, n_boot=resamples, seed=seed, bins=bins)
        paths = evaluate_outputs(result, table, out)
    except DeidgateError as exc:
        common.exit_for(exc)
    for m in result["models"]:
        a = m["auc"]
        typer.echo(f"{m['model']['name']} {m['model']['version']}: AUC {a['estimate']:.3f} "
                   f"(95% CI {a['low']:.3f}-{a['high']:.3f}, clustered bootstrap)")
    if "comparison" in result and "p_value" in result["comparison"]["delong"]:
        d = result["comparison"]["delong"]
        typer.echo(f"DeLong: difference {d['difference']:+.3f}, p = {d['p_value']:.4g}")
    _done(paths)


def simulate(
    scores: Scores,
    out: Out,
    card: Card = None,
    threshold: Thresholds = None,
    score_column: Column = None,
    readers: Annotated[int, typer.Option(min=1, help="Readers reading at once.")] = 2,
    reads_per_hour: Annotated[float, typer.Option(min=0.1, help="Per reader.")] = 30.0,
    day_start: Annotated[float, typer.Option(min=0, max=24, help="Hour reading starts.")] = 8.0,
    day_end: Annotated[float, typer.Option(min=0, max=24, help="Hour reading ends.")] = 16.0,
    every_day: Annotated[bool, typer.Option(help="Read (and receive) on weekends too.")] = False,
    arrivals: Annotated[str, typer.Option(help="csv (the arrival column), poisson or batch."
                                          )] = "poisson",
    arrival_rate: Annotated[float | None, typer.Option(
        min=0.01, help="Poisson exams per open hour (default: --load x reading capacity).")] = None,
    load: Annotated[float, typer.Option(min=0.01, help="Arrivals / reading capacity.")] = 0.95,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Batch: exams per day.")] = None,
    batch_hour: Annotated[float, typer.Option(min=0, max=23.99, help="Batch: hour.")] = 16.0,
    ceiling_hours: Annotated[float, typer.Option(min=0, help="Maximum-wait ceiling.")] = 24.0,
    resamples: Resamples = 2000,
    seed: Seed = 0,
) -> None:
    """Rule-out of the lowest scores, and reading order (FIFO, score, score with a wait
    ceiling) under a reading capacity and an arrival pattern."""
    from workers.score.readingqueue import Capacity, Hours
    from workers.score.report import simulate_outputs
    from workers.score.simulate import Arrivals
    from workers.score.simulate import simulate as run
    from workers.score.table import read_scores

    extra = _thresholds(threshold)
    if arrivals not in ("csv", "poisson", "batch"):
        common.fail("--arrivals is one of csv, poisson, batch", code=2)
    try:  # combinations the options' own ranges cannot express, e.g. a read longer than a day
        hours = Hours(day_start, day_end, weekdays_only=not every_day)
        capacity = Capacity(readers, reads_per_hour, hours)
    except ValueError as exc:
        common.fail(str(exc), code=2)
    spec = Arrivals(arrivals, arrival_rate, load, batch_size, batch_hour, hours)
    try:
        table = read_scores(scores)
        col = _columns(table, score_column, 1)[0]
        info = _info(card, col, extra, None, None)
        result, runs, arrival = run(table, info.thresholds, capacity, spec,
                                    ceiling_hours=ceiling_hours, n_boot=resamples, seed=seed,
                                    score=col)
        paths = simulate_outputs(result, table, runs, arrival, info.as_dict(), out)
    except DeidgateError as exc:
        common.exit_for(exc)
    ro = result["rule_out"]
    typer.echo(f"rule-out: up to {ro['largest_share_without_missed_cancer']:.1%} of exams "
               "below a threshold with no cancer among them")
    for p, v in result["reading_order"]["orderings"].items():
        a = v["abnormal"]
        typer.echo(f"{p}: abnormal turnaround mean {a['mean']:.2f} h, max {a['max']:.2f} h; "
                   f"all exams max {v['all']['max']:.1f} h")
    _done(paths)


def monitor(
    scores: Scores,
    out: Out,
    card: Card = None,
    score_column: Column = None,
    reference_weeks: Annotated[int, typer.Option(min=1, help="Reference: first N weeks.")] = 4,
    reference_until: Annotated[str | None, typer.Option(
        help="Reference: exams before this date (YYYY-MM-DD) instead.")] = None,
    min_n: Annotated[int, typer.Option(min=1, help="Fewest exams a week to alert on.")] = 30,
) -> None:
    """Score distribution per vendor and ISO week, with PSI and KS against a reference."""
    import numpy as np

    from workers.score.monitor import monitor as run
    from workers.score.report import monitor_outputs
    from workers.score.table import read_scores

    until = None
    if reference_until is not None:
        try:
            until = np.datetime64(reference_until, "s")
        except ValueError:
            common.fail("--reference-until needs a date such as 2024-03-04", code=2)
    try:
        table = read_scores(scores, require_label=False)
        col = _columns(table, score_column, 1)[0]
        info = _info(card, col, {}, None, None)
        result = run(table, reference_weeks=reference_weeks, reference_until=until,
                     min_n=min_n, score=col)
        paths = monitor_outputs(result, table, info.as_dict(), out)
    except DeidgateError as exc:
        common.exit_for(exc)
    for a in result["alerts"]:
        typer.echo(f"{a['flag']}: {a['vendor']} {a['week']} PSI {a['psi']:.2f} (n={a['n']})")
    typer.echo(f"{len(result['alerts'])} vendor-weeks flagged")
    _done(paths)


def register(model_app: typer.Typer) -> None:
    """Add evaluate, simulate and monitor to ``deidgate model``."""
    model_app.command("evaluate")(evaluate)
    model_app.command("simulate")(simulate)
    model_app.command("monitor")(monitor)
