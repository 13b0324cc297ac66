"""The ``deidgate`` console command.

Each ``service/cli/<area>.py`` module exposes ``register(app)`` and is discovered here, so areas
add commands without touching this file. Settings are built once in the callback and handed to
commands through the Typer context (``common.settings(ctx)``).
"""

from __future__ import annotations

import importlib
import pkgutil

import typer

from service.cli import common

app = typer.Typer(
    name="deidgate",
    help="DICOM de-identification and extraction gateway for breast-cancer screening.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals may hold PHI
)


@app.callback()
def _root(ctx: typer.Context) -> None:
    common.init_context(ctx)


def _register_all() -> None:
    import service.cli as pkg

    for mod in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if mod.name in {"main", "common", "model_eval"}:  # model_eval: under `model` (model.py)
            continue
        module = importlib.import_module(f"service.cli.{mod.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)


_register_all()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
