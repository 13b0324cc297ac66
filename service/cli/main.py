"""The ``deidgate`` console command.

Each ``service/cli/<area>.py`` module exposes ``register(app)`` and is discovered here, so areas
add commands without touching this file. Settings are built once in the callback and handed to
commands through the Typer context (``common.settings(ctx)``).
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

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


# Command -> the module that registers it. Why: importing every area costs ~1 s of start-up
# (pynetdicom, pydicom, the engine), paid by every `deidgate job submit --wait` a service runs;
# a named command imports only its own module. tests/cli/test_main.py checks this table
# against what the modules register.
COMMANDS = {"ae": "ae", "audit": "audit", "backup": "backup", "db": "db",
            "deidentify": "deidentify", "demo": "demo", "job": "job", "keys": "keys",
            "listen": "listen", "model": "model", "pacs": "pacs", "policy": "policy",
            "serve": "serve", "worker": "serve", "token": "token", "user": "user"}

# Not top-level: model_eval and model_ops register on `model` (model.py), the rest are helpers.
_NOT_TOP = {"main", "common", "model_eval", "model_ops"}


def cli_modules() -> list[str]:
    """Every ``service/cli`` module that registers top-level commands."""
    import service.cli as pkg

    return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__)
                  if m.name not in _NOT_TOP)



def _register(name: str) -> None:
    register = getattr(importlib.import_module(f"service.cli.{name}"), "register", None)
    if register is not None:
        register(app)


def _register_all(argv: list[str]) -> None:
    """The named command's module alone, else (help, an unknown word) every module."""
    wanted = COMMANDS.get(argv[1]) if len(argv) > 1 else None
    for name in [wanted] if wanted is not None else cli_modules():
        _register(name)


_register_all(sys.argv)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
