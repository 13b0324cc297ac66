"""``deidgate db upgrade|current``: the schema is Alembic-managed, one branch per area."""

from __future__ import annotations

import typer

from service.cli.common import fail, state
from service.core.queues import node_name

db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)


@db_app.command("upgrade")
def upgrade(ctx: typer.Context) -> None:
    """Upgrade the database to every area's head (creates an empty database)."""
    from sqlalchemy.exc import SQLAlchemyError

    from service.db.migrate import current_heads
    from service.db.migrate import upgrade as run_upgrade

    settings = state(ctx).settings
    settings.home.mkdir(parents=True, exist_ok=True)
    try:
        run_upgrade(settings.db_url, default_node=node_name(settings))
        heads = sorted(current_heads(settings.db_url))
    except SQLAlchemyError as exc:
        fail(f"upgrade failed: {type(exc).__name__}")
    typer.echo(f"database at heads: {', '.join(heads)}")


@db_app.command("current")
def current(ctx: typer.Context) -> None:
    """Show the applied revisions; exit 1 when the database is behind the code."""
    from sqlalchemy.exc import SQLAlchemyError

    from service.db.migrate import current_heads, script_heads

    settings = state(ctx).settings
    settings.home.mkdir(parents=True, exist_ok=True)
    try:
        have, want = current_heads(settings.db_url), script_heads(settings.db_url)
    except SQLAlchemyError as exc:
        fail(f"cannot read the database: {type(exc).__name__}")
    typer.echo(f"current: {', '.join(sorted(have)) or '(empty)'}")
    if have != want:
        typer.echo(f"behind: expected {', '.join(sorted(want))}; run `deidgate db upgrade`",
                   err=True)
        raise typer.Exit(1)
    typer.echo("up to date")


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")
