"""``deidgate token create|list|revoke``: the only way API tokens come to exist.

There is no default token and no way to read one back: ``create`` prints the token once.
Issuing and revoking are appended to the audit chain (name, role, prefix; never the token), so
auditors can tell who held API access when.
"""

from __future__ import annotations

from typing import Annotated

import typer
from sqlalchemy.orm import Session

from service.audit.store import AuditStore
from service.cli.common import cli_actor, exit_for, state
from service.core.errors import DeidgateError
from service.core.keys import SiteKeys
from service.core.security import Role, create_token, list_tokens, revoke_token
from service.db.base import as_utc
from service.db.session import session_scope


def _record(session: Session, keys: SiteKeys, kind: str, **details: object) -> None:
    AuditStore(session, keys).log_event(kind, actor=cli_actor(), details=details)


token_app = typer.Typer(help="API tokens for the REST API (stored hashed, shown once).")


@token_app.command("create")
def create(
    ctx: typer.Context,
    role: Annotated[Role, typer.Option("--role", help="admin | staff | auditor | service")],
    name: Annotated[
        str | None,
        typer.Option("--name", help="unique name, recorded as the actor in the audit log"),
    ] = None,
) -> None:
    """Issue a token and print it once; store it now, it cannot be shown again."""
    st = state(ctx)
    url, keys = st.db_url(), st.keys()
    try:
        with session_scope(url) as s:
            issued = create_token(s, role=role, name=name)
            _record(s, keys, "token.created", id=issued.id, name=issued.name,
                    role=issued.role.value, prefix=issued.prefix)
    except DeidgateError as exc:
        exit_for(exc)
    typer.echo(issued.token)
    typer.echo(
        f"created token id={issued.id} name={issued.name} role={issued.role.value} "
        f"prefix={issued.prefix}; it is shown only this once",
        err=True,
    )


@token_app.command("list")
def list_(ctx: typer.Context) -> None:
    """List tokens (never the tokens themselves: only id, name, role and prefix)."""
    url = state(ctx).db_url()
    with session_scope(url) as s:
        rows = list_tokens(s)
        if not rows:
            typer.echo("no tokens; create one with `deidgate token create --role ROLE`")
            return
        typer.echo(f"{'ID':>4}  {'NAME':<24} {'ROLE':<8} {'PREFIX':<12} {'CREATED':<20} STATUS")
        for r in rows:
            created = as_utc(r.created_at)
            status = "revoked" if r.revoked_at else "active"
            typer.echo(
                f"{r.id:>4}  {r.name:<24} {r.role:<8} dgt_{r.prefix:<8} "
                f"{created:%Y-%m-%d %H:%M:%S}  {status}"  # type: ignore[str-format]
            )


@token_app.command("revoke")
def revoke(ctx: typer.Context, token_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
    """Revoke a token at once; it stays listed so audit entries keep naming its holder."""
    st = state(ctx)
    url, keys = st.db_url(), st.keys()
    try:
        with session_scope(url) as s:
            row = revoke_token(s, token_id)
            name = row.name
            _record(s, keys, "token.revoked", id=token_id, name=name)
    except DeidgateError as exc:
        exit_for(exc)
    typer.echo(f"revoked token id={token_id} name={name}")


def register(app: typer.Typer) -> None:
    app.add_typer(token_app, name="token")
