"""``deidgate model ...``: the scoring model toolkit.

``train`` fine-tunes a MONAI network on de-identified output plus a labels CSV; ``export`` writes
a TorchScript copy; ``card validate`` checks a card (and its weights' sha256); ``demo`` builds or
reuses the cached synthetic demo model. ``evaluate``, ``simulate`` and ``monitor`` live in
``service/cli/model_eval.py``; ``register``, ``rollback``, ``list``, ``score``, ``export-scores``
and ``compare`` in ``service/cli/model_ops.py``; both register on this sub-app.
Heavy imports (torch, MONAI) happen inside the commands, so ``deidgate --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import typer

from service.cli import model_eval, model_ops
from service.cli.common import exit_for, fail, is_tty, state
from service.core.errors import DeidgateError

model_app = typer.Typer(help="Train, export, check and build scoring models.",
                        no_args_is_help=True)
card_app = typer.Typer(help="Model cards.", no_args_is_help=True)
model_app.add_typer(card_app, name="card")


@card_app.command("validate")
def card_validate(
    path: Path = typer.Argument(..., exists=True, help="model folder or card.yaml"),  # noqa: B008
    weights: bool = typer.Option(True, help="check the weights' sha256 too"),
) -> None:
    """Validate a model card strictly; errors name file, line and key."""
    from workers.score.card import load_card, verify_weights

    try:
        card = load_card(path)
        if weights:
            verify_weights(card, path if path.is_dir() else path.parent)
    except DeidgateError as exc:
        exit_for(exc)
    arch = card.architecture
    net = f"{arch.network} " if arch.network else ""
    typer.echo(f"ok: {card.display_name}: {arch.kind} {net}{arch.input.rows}x{arch.input.cols}, "
               f"preprocessing {card.preprocessing.version}, device UID {card.device_uid}, "
               f"sha256 {card.weights.sha256[:12]}..." + ("" if weights else " (not checked)"))


@model_app.command("export")
def export(
    src: Path = typer.Argument(..., exists=True, file_okay=False, help="MONAI model folder"),  # noqa: B008
    dst: Path = typer.Argument(..., help="new TorchScript model folder"),  # noqa: B008
) -> None:
    """Export a MONAI model folder to TorchScript (scores checked equal to the source)."""
    from workers.score.models import export_torchscript

    try:
        card = export_torchscript(src, dst)
    except DeidgateError as exc:
        exit_for(exc)
    typer.echo(f"exported: {dst} ({card.display_name}, device UID {card.device_uid})")


@model_app.command("train")
def train_cmd(
    data: Path = typer.Argument(..., exists=True, file_okay=False,  # noqa: B008
                                help="folder of de-identified DICOM output"),
    labels: Path = typer.Argument(..., exists=True, dir_okay=False,  # noqa: B008
                                  help="CSV: study_uid,label[,laterality]"),
    out: Path = typer.Argument(..., help="run folder (checkpoints, log, model/)"),  # noqa: B008
    config: Path | None = typer.Option(None, exists=True, help="TrainConfig as JSON"),  # noqa: B008
    epochs: int | None = typer.Option(None, min=1),
    name: str | None = typer.Option(None),
    version: str | None = typer.Option(None),
    device: str | None = typer.Option(None, help="auto, cpu, cuda"),
    resume: bool = typer.Option(False, help="continue from OUT/checkpoints/last.pt"),
) -> None:
    """Fine-tune a MONAI network; the validation split is by woman. Past one GPU, launch
    ``torchrun --nproc-per-node N -m workers.score.train DATA LABELS OUT``."""
    from workers.score.card import ModelCardError
    from workers.score.train import TrainConfig, TrainError, train

    try:
        cfg = TrainConfig.model_validate_json(config.read_text()) if config else TrainConfig()
    except ValueError as exc:
        fail(f"{config}: {exc}", code=2)
    updates = {k: v for k, v in {"epochs": epochs, "name": name, "version": version,
                                 "device": device}.items() if v is not None}
    cfg = cfg.model_copy(update=updates)
    try:
        result = train(data, labels, out, cfg, progress=is_tty(), resume=resume)
    except (TrainError, ModelCardError) as exc:
        fail(str(exc), code=2)
    typer.echo(f"model: {result.model_dir} (best epoch {result.best_epoch}, validation exam AUC "
               f"{result.best_val_auc:.3f}, {len(result.val_women)} validation women)")


@model_app.command("demo")
def demo(ctx: typer.Context) -> None:
    """Build (first time, a few minutes on the CPU) or reuse the synthetic demo model."""
    from synthetic.demo_model import ensure_demo_model
    from workers.score.card import load_card

    home = state(ctx).settings.home
    result = ensure_demo_model(home, progress=is_tty())
    card = load_card(result.folder)
    how = f"trained in {result.seconds:.0f} s" if result.trained else "cached"
    typer.echo(f"{card.display_name}: {result.folder} ({how})")


def register(app: typer.Typer) -> None:
    model_eval.register(model_app)
    model_ops.register(model_app)
    app.add_typer(model_app, name="model")
