"""``deidgate ae show|set|allow|disallow``: the gateway's own AE and who may send to it.

Changes go to the database and reach a running listener within seconds (allow-list) or at its
next start (title, host, port).
"""

from __future__ import annotations

from typing import Annotated

import typer

from service.cli.common import exit_for, state
from service.core.errors import DeidgateError
from service.db.session import session_scope
from service.dicom import admin

ae_app = typer.Typer(help="The gateway's DICOM AE and its calling-AE allow-list.")


def _seeded(ctx: typer.Context) -> str:
    st = state(ctx)
    url = st.db_url()
    with session_scope(url) as s:
        admin.seed_from_settings(s, st.settings)
    return url


@ae_app.command("show")
def show(ctx: typer.Context) -> None:
    """Print the local AE settings and the allow-list."""
    try:
        url = _seeded(ctx)
        with session_scope(url) as s:
            local = admin.get_local_ae(s, state(ctx).settings)
            allowed = admin.list_allowed(s)
    except DeidgateError as exc:
        exit_for(exc)
    typer.echo(f"AE title  {local.ae_title}")
    typer.echo(f"host      {local.host}")
    typer.echo(f"port      {local.port}")
    typer.echo(f"max PDU   {local.max_pdu}")
    if not allowed:
        typer.echo("allowed   (none: every association is rejected; add with `deidgate ae allow`)")
    for a in allowed:
        typer.echo(f"allowed   {a.ae_title}" + (f" from {a.host}" if a.host else " from any host"))


@ae_app.command("set")
def set_(
    ctx: typer.Context,
    ae_title: Annotated[str | None, typer.Option("--ae-title", help="1-16 characters")] = None,
    port: Annotated[int | None, typer.Option("--port")] = None,
    host: Annotated[str | None, typer.Option("--host", help="bind address")] = None,
    max_pdu: Annotated[int | None, typer.Option("--max-pdu", help="bytes")] = None,
) -> None:
    """Change the gateway's AE title, port, bind address or max PDU (listener restart needed)."""
    try:
        url = _seeded(ctx)
        with session_scope(url) as s:
            local = admin.set_local_ae(s, state(ctx).settings, ae_title=ae_title, host=host,
                                       port=port, max_pdu=max_pdu)
    except DeidgateError as exc:
        exit_for(exc)
    typer.echo(f"local AE {local.ae_title} on {local.host}:{local.port} (max PDU "
               f"{local.max_pdu}); restart the listener to apply")


@ae_app.command("allow")
def allow(
    ctx: typer.Context,
    calling_ae: Annotated[str, typer.Argument(help="calling AE title")],
    host: Annotated[str | None, typer.Option("--host", help="only from this IP address")] = None,
) -> None:
    """Allow a calling AE title to associate (optionally only from one address)."""
    try:
        url = _seeded(ctx)
        with session_scope(url) as s:
            a = admin.allow(s, calling_ae, host)
    except DeidgateError as exc:
        exit_for(exc)
    typer.echo(f"allowed {a.ae_title}" + (f" from {a.host}" if a.host else " from any host"))


@ae_app.command("disallow")
def disallow(ctx: typer.Context,
             calling_ae: Annotated[str, typer.Argument(help="calling AE title")]) -> None:
    """Remove a calling AE title from the allow-list (all its host pins)."""
    try:
        url = _seeded(ctx)
        with session_scope(url) as s:
            n = admin.disallow(s, calling_ae)
    except DeidgateError as exc:
        exit_for(exc)
    if n == 0:
        typer.echo(f"error: {calling_ae.strip()} was not on the allow-list", err=True)
        raise typer.Exit(1)
    typer.echo(f"disallowed {calling_ae.strip()} ({n} entr{'y' if n == 1 else 'ies'})")


def register(app: typer.Typer) -> None:
    app.add_typer(ae_app, name="ae")
