"""``deidgate ae show|set|allow|disallow``: the gateway's own AE and who may send to it.

Changes go to the database and reach a running listener within seconds (allow-list) or at its
next start (title, host, port).
"""

from __future__ import annotations

from typing import Annotated

import typer
from sqlalchemy.orm import Session

from service.cli.common import audit, state, transact
from service.cli.tls_options import (
    AllowPlain,
    PinCert,
    PinName,
    PinSha256,
    describe_tls,
    tls_settings,
)
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
        typer.echo(f"allowed   {a.ae_title}" + (f" from {a.host}" if a.host else " from any host")
                   + f"  {describe_tls(a)}")


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
    tls: Annotated[str | None, typer.Option(
        "--tls", help="off | tls | mtls-required (unset: keep the entry's)")] = None,
    pin_sha256: PinSha256 = None,
    pin_cert: PinCert = None,
    pin_name: PinName = None,
    allow_plain: AllowPlain = False,
) -> None:
    """Allow a calling AE title to associate (optionally only from one address, optionally
    only over DICOM TLS with its certificate pinned to the title)."""
    t = (tls_settings(tls, pin_sha256, pin_cert, pin_name, allow_plain)
         if tls is not None or pin_sha256 or pin_cert or pin_name or allow_plain else {})

    def change(s: Session) -> admin.AllowedAE:
        a = admin.allow(s, calling_ae, host, **t)
        audit(ctx, s, "dicom.caller-allowed", ae_title=a.ae_title, host=a.host,
              tls=sorted(t))
        return a

    a = transact(ctx, change, seed_dicom=True)
    typer.echo(f"allowed {a.ae_title}" + (f" from {a.host}" if a.host else " from any host")
               + f"  {describe_tls(a)}")


@ae_app.command("tls")
def tls_(
    ctx: typer.Context,
    calling_ae: Annotated[str, typer.Argument(help="calling AE title on the allow-list")],
    mode: Annotated[str, typer.Option("--mode", help="off | tls | mtls-required")] = "off",
    pin_sha256: PinSha256 = None,
    pin_cert: PinCert = None,
    pin_name: PinName = None,
    allow_plain: AllowPlain = False,
) -> None:
    """Set the DICOM TLS policy of a calling AE (all its allow-list entries): ``tls`` refuses
    its plain associations, ``mtls-required`` also needs a client certificate naming the AE
    title (or matching the pin); ``--allow-plain`` accepts plain DICOM during a migration."""
    t = tls_settings(mode, pin_sha256, pin_cert, pin_name, allow_plain)

    def change(s: Session) -> list[admin.AllowedAE]:
        rows = admin.set_caller_tls(s, calling_ae, **t)
        audit(ctx, s, "dicom.caller-tls-changed", ae_title=calling_ae.strip(), mode=mode,
              pinned=bool(pin_sha256 or pin_cert or pin_name), allow_plain=allow_plain)
        return rows

    rows = transact(ctx, change, seed_dicom=True)
    typer.echo(f"{calling_ae.strip()} ({len(rows)} entr{'y' if len(rows) == 1 else 'ies'}): "
               f"{describe_tls(rows[0])}")


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
