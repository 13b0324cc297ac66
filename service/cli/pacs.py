"""``deidgate pacs add|list|remove|echo``: the PACS nodes the gateway queries and pulls from."""

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
    TlsModeOption,
    describe_tls,
    tls_settings,
)
from service.dicom import admin

pacs_app = typer.Typer(help="PACS nodes (query/retrieve peers).")


@pacs_app.command("add")
def add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="a short name for the node")],
    ae_title: Annotated[str, typer.Option("--ae-title")],
    host: Annotated[str, typer.Option("--host")],
    port: Annotated[int, typer.Option("--port")],
    retrieve: Annotated[str, typer.Option("--retrieve", help="move | get")] = "move",
    max_associations: Annotated[int, typer.Option("--max-associations")] = 2,
    tls: TlsModeOption = "off",
    pin_sha256: PinSha256 = None,
    pin_cert: PinCert = None,
    pin_name: PinName = None,
) -> None:
    """Add a PACS node (``--tls mtls-required``: DICOM TLS only, its certificate pinned)."""
    t = tls_settings(tls, pin_sha256, pin_cert, pin_name, False)

    def change(s: Session) -> admin.NodeConfig:
        n = admin.add_node(s, name, ae_title=ae_title, host=host, port=port, retrieve=retrieve,
                           max_associations=max_associations, **t)
        audit(ctx, s, "dicom.node-added", name=n.name, ae_title=n.ae_title, host=n.host,
              port=n.port, retrieve=n.retrieve, max_associations=n.max_associations, tls=tls)
        return n

    n = transact(ctx, change, seed_dicom=True)
    typer.echo(f"added {n.name}: {n.ae_title}@{n.host}:{n.port} retrieve={n.retrieve} "
               f"max-associations={n.max_associations} {describe_tls(n)}")


@pacs_app.command("tls")
def tls_(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="the node's name")],
    mode: Annotated[str, typer.Option("--mode", help="off | tls | mtls-required")] = "off",
    pin_sha256: PinSha256 = None,
    pin_cert: PinCert = None,
    pin_name: PinName = None,
    allow_plain: AllowPlain = False,
) -> None:
    """Set a node's DICOM TLS policy (replaces mode and pins). Our SCU never falls back to
    plain DICOM; ``--allow-plain`` only lets the node still call us in plain DICOM."""
    t = tls_settings(mode, pin_sha256, pin_cert, pin_name, allow_plain)

    def change(s: Session) -> admin.NodeConfig:
        n = admin.set_node_tls(s, name, **t)
        audit(ctx, s, "dicom.node-tls-changed", name=n.name, mode=mode,
              pinned=bool(pin_sha256 or pin_cert or pin_name), allow_plain=allow_plain)
        return n

    n = transact(ctx, change, seed_dicom=True)
    typer.echo(f"{n.name}: {describe_tls(n)}")


@pacs_app.command("list")
def list_(ctx: typer.Context) -> None:
    """List PACS nodes."""
    nodes = transact(ctx, admin.list_nodes, seed_dicom=True)
    if not nodes:
        typer.echo("no PACS nodes; add one with `deidgate pacs add`")
        return
    typer.echo(f"{'NAME':<20} {'AE TITLE':<16} {'HOST':<24} {'PORT':>5} RETRIEVE MAX-ASSOC "
               "TLS")
    for n in nodes:
        typer.echo(f"{n.name:<20} {n.ae_title:<16} {n.host:<24} {n.port:>5} {n.retrieve:<8} "
                   f"{n.max_associations:<9} {describe_tls(n)}")


@pacs_app.command("remove")
def remove(ctx: typer.Context, name: Annotated[str, typer.Argument()]) -> None:
    """Remove a PACS node."""
    def change(s: Session) -> None:
        admin.remove_node(s, name)
        audit(ctx, s, "dicom.node-removed", name=name)

    transact(ctx, change, seed_dicom=True)
    typer.echo(f"removed {name}")


@pacs_app.command("echo")
def echo(ctx: typer.Context, name: Annotated[str, typer.Argument()],
         timeout: Annotated[float, typer.Option("--timeout", help="seconds")] = 10.0) -> None:
    """C-ECHO the node: round-trip time, or exactly why it failed."""
    from service.dicom.scu import echo as c_echo
    from service.dicom.tls import DicomTlsFiles

    settings = state(ctx).settings
    node, local, files = transact(ctx, lambda s: (
        admin.get_node(s, name), admin.get_local_ae(s, settings),
        DicomTlsFiles.from_settings(settings)), seed_dicom=True)
    res = c_echo(node, local.ae_title, timeout=timeout, tls_files=files)
    if res.ok:
        typer.echo(f"{name}: C-ECHO ok in {res.rtt_ms:.1f} ms")
        return
    typer.echo(f"error: {name}: {res.failure}: {res.detail}", err=True)
    raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(pacs_app, name="pacs")
