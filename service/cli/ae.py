"""``deidgate ae show|set|allow|disallow``: the gateway's own AE and who may send to it.

Changes go to the database and reach a running listener within seconds (allow-list) or at its
next start (title, host, port).
"""

from __future__ import annotations

from typing import Annotated

import typer
from sqlalchemy.orm import Session

from service.cli.common import audit, state, transact
from service.dicom import admin

ae_app = typer.Typer(help="The gateway's DICOM AE and its calling-AE allow-list.")


@ae_app.command("show")
def show(ctx: typer.Context) -> None:
    """Print the local AE settings and the allow-list."""
    settings = state(ctx).settings
    local, allowed = transact(ctx, lambda s: (admin.get_local_ae(s, settings),
                                              admin.list_allowed(s)), seed_dicom=True)
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
    settings = state(ctx).settings
    def change(s: Session) -> admin.LocalAEConfig:
        local = admin.set_local_ae(s, settings, ae_title=ae_title, host=host, port=port,
                                   max_pdu=max_pdu)
        audit(ctx, s, "dicom.local-ae-changed", ae_title=local.ae_title, host=local.host,
              port=local.port, max_pdu=local.max_pdu)
        return local

    local = transact(ctx, change, seed_dicom=True)
    typer.echo(f"local AE {local.ae_title} on {local.host}:{local.port} (max PDU "
               f"{local.max_pdu}); restart the listener to apply")


@ae_app.command("allow")
def allow(
    ctx: typer.Context,
    calling_ae: Annotated[str, typer.Argument(help="calling AE title")],
    host: Annotated[str | None, typer.Option("--host", help="only from this IP address")] = None,
) -> None:
    """Allow a calling AE title to associate (optionally only from one address)."""
    def change(s: Session) -> admin.AllowedAE:
        a = admin.allow(s, calling_ae, host)
        audit(ctx, s, "dicom.caller-allowed", ae_title=a.ae_title, host=a.host)
        return a

    a = transact(ctx, change, seed_dicom=True)
    typer.echo(f"allowed {a.ae_title}" + (f" from {a.host}" if a.host else " from any host"))


@ae_app.command("disallow")
def disallow(ctx: typer.Context,
             calling_ae: Annotated[str, typer.Argument(help="calling AE title")]) -> None:
    """Remove a calling AE title from the allow-list (all its host pins)."""
    def change(s: Session) -> int:
        n = admin.disallow(s, calling_ae)
        if n:
            audit(ctx, s, "dicom.caller-disallowed", ae_title=calling_ae.strip(), entries=n)
        return n

    n = transact(ctx, change, seed_dicom=True)
    if n == 0:
        typer.echo(f"error: {calling_ae.strip()} was not on the allow-list", err=True)
        raise typer.Exit(1)
    typer.echo(f"disallowed {calling_ae.strip()} ({n} entr{'y' if n == 1 else 'ies'})")


def register(app: typer.Typer) -> None:
    app.add_typer(ae_app, name="ae")
