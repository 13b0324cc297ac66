"""The console command's lazy registration: a named command imports only its own module."""

from __future__ import annotations

import subprocess
import sys

import typer

from service.cli import main


def _names(module: str) -> set[str]:
    """Top-level command names ``service.cli.<module>.register`` adds to a fresh app."""
    import importlib

    app = typer.Typer()
    register = getattr(importlib.import_module(f"service.cli.{module}"), "register", None)
    if register is not None:
        register(app)
    return {c.name for c in app.registered_commands if c.name} | \
        {g.name for g in app.registered_groups if g.name}


def test_the_table_names_every_command_and_its_module() -> None:
    registered = {name: mod for mod in main.cli_modules() for name in _names(mod)}
    assert registered == main.COMMANDS


def test_a_named_command_does_not_import_the_dicom_stack() -> None:
    code = ("import sys; sys.argv = ['deidgate', 'job', '--help']\n"
            "import service.cli.main as m\n"
            "print(sorted(g.name for g in m.app.registered_groups), 'pynetdicom' in sys.modules,"
            " 'workers.deid.engine' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "['job'] False False"


def test_help_lists_every_command() -> None:
    out = subprocess.run([sys.executable, "-m", "service.cli.main", "--help"],
                         capture_output=True, text=True, check=True).stdout
    for name in main.COMMANDS:
        assert name in out
