"""``deidgate pacs add|list|remove|echo``: the PACS nodes the gateway queries and pulls from."""

from __future__ import annotations

from typing import Annotated

import typer
from sqlalchemy.orm import Session

from service.cli.common import audit, state, transact
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
) -> None:
    """Add a PACS node."""
    def change(s: Session) -> admin.NodeConfig:
        n = admin.add_node(s, name, ae_title=ae_title, host=host, port=port, retrieve=retrieve,
                           max_associations=max_associations)
        audit(ctx, s, "dicom.node-added", name=n.name, ae_title=n.ae_title, host=n.host,
              port=n.port, retrieve=n.retrieve, max_associations=n.max_associations)
        return n

    n = transact(ctx, change, seed_dicom=True)
    typer.echo(f"added {n.name}: {n.ae_title}@{n.host}:{n.port} retrieve={n.retrieve} "
               f"max-associations={n.max_associations}")


@pacs_app.command("list")
def list_(ctx: typer.Context) -> None:
    """List PACS nodes."""
    nodes = transact(ctx, admin.list_nodes, seed_dicom=True)
    if not nodes:
        typer.echo("no PACS nodes; add one with `deidgate pacs add`")
        return
    typer.echo(f"{'NAME':<20} {'AE TITLE':<16} {'HOST':<24} {'PORT':>5} RETRIEVE MAX-ASSOC")
    for n in nodes:
        typer.echo(f"{n.name:<20} {n.ae_title:<16} {n.host:<24} {n.port:>5} {n.retrieve:<8} "
                   f"{n.max_associations}")


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

    settings = state(ctx).settings
    node, local = transact(ctx, lambda s: (admin.get_node(s, name),
                                           admin.get_local_ae(s, settings)), seed_dicom=True)
    res = c_echo(node, local.ae_title, timeout=timeout)
    if res.ok:
        typer.echo(f"{name}: C-ECHO ok in {res.rtt_ms:.1f} ms")
        return
    typer.echo(f"error: {name}: {res.failure}: {res.detail}", err=True)
    raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(pacs_app, name="pacs")
