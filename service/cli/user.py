"""``deidgate user create|passwd|disable|list``: web UI accounts.

Passwords come from a hidden prompt (asked twice) or, for scripts, one line on standard input
with ``--password-stdin``; never from an argument, which would land in the shell history and in
every process listing. Creating, changing and disabling are appended to the audit chain (name
and role; never the password). Disabling ends the account's open sessions at once.
"""

from __future__ import annotations

import getpass
import sys
from typing import Annotated

import typer

from service.cli.common import cli_actor, exit_for, fail, state
from service.core.errors import DeidgateError
from service.core.security import Role
from service.db.base import as_utc

user_app = typer.Typer(help="Web UI user accounts (argon2id password hashes).",
                       no_args_is_help=True)

StdinOpt = Annotated[bool, typer.Option(
    "--password-stdin", help="read the password from the first line of standard input")]


def read_password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        password = line.rstrip("\r\n")
        if not password:
            fail("--password-stdin: standard input had no password line")
        return password
    if not sys.stdin.isatty():
        fail("no terminal to ask for the password; use --password-stdin")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        fail("the two passwords differ")
    return first


@user_app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="user name (letters, digits, . _ -)")],
    role: Annotated[Role, typer.Option("--role", help="admin | staff | auditor | service "
                                       "(service: research coordinators)")],
    password_stdin: StdinOpt = False,
) -> None:
    """Create an account; the password is asked for (or read from stdin)."""
    from service.audit.store import AuditStore
    from service.db.session import session_scope
    from service.web.accounts import check_name, check_password, create_user

    st = state(ctx)
    url, keys = st.db_url(), st.keys()
    try:
        check_name(name)
        password = read_password(password_stdin)
        check_password(password, name=name)
        with session_scope(url) as s:
            user = create_user(s, name=name, role=role, password=password)
            AuditStore(s, keys).log_event("user.created", actor=cli_actor(), details={
                "id": user.id, "name": user.name, "role": user.role})
    except DeidgateError as exc:
        exit_for(exc)
    typer.echo(f"created user {name} (role {role.value})")


@user_app.command("passwd")
def passwd(ctx: typer.Context, name: Annotated[str, typer.Argument()],
           password_stdin: StdinOpt = False) -> None:
    """Set a new password; the account's open sessions end."""
    from service.audit.store import AuditStore
    from service.db.session import session_scope
    from service.web.accounts import check_password, get_user, set_password

    st = state(ctx)
    url, keys = st.db_url(), st.keys()
    try:
        with session_scope(url) as s:
            get_user(s, name)  # an unknown name fails before the prompt
        password = read_password(password_stdin)
        check_password(password, name=name)
        with session_scope(url) as s:
            user = set_password(s, name, password)
            AuditStore(s, keys).log_event("user.password-changed", actor=cli_actor(),
                                          details={"id": user.id, "name": user.name})
    except DeidgateError as exc:
        exit_for(exc)
    typer.echo(f"password changed for {name}; its sessions were signed out")


@user_app.command("disable")
def disable(ctx: typer.Context, name: Annotated[str, typer.Argument()]) -> None:
    """Disable an account and end its sessions; it stays listed for the audit trail."""
    from service.audit.store import AuditStore
    from service.db.session import session_scope
    from service.web.accounts import disable_user

    st = state(ctx)
    url, keys = st.db_url(), st.keys()
    try:
        with session_scope(url) as s:
            user = disable_user(s, name)
            AuditStore(s, keys).log_event("user.disabled", actor=cli_actor(),
                                          details={"id": user.id, "name": user.name})
    except DeidgateError as exc:
        exit_for(exc)
    typer.echo(f"disabled user {name}")


@user_app.command("list")
def list_(ctx: typer.Context) -> None:
    """Accounts with role, last sign-in and status (never a password hash)."""
    from service.db.session import session_scope
    from service.web.accounts import list_users

    with session_scope(state(ctx).db_url()) as s:
        rows = list_users(s)
        if not rows:
            typer.echo("no users; create one with `deidgate user create NAME --role ROLE`")
            return
        typer.echo(f"{'ID':>4}  {'NAME':<24} {'ROLE':<8} {'LAST SIGN-IN':<20} STATUS")
        for u in rows:
            last = as_utc(u.last_login_at)
            when = f"{last:%Y-%m-%d %H:%M:%S}" if last else "never"
            status = "disabled" if u.disabled_at else "active"
            typer.echo(f"{u.id:>4}  {u.name:<24} {u.role:<8} {when:<20} {status}")


def register(app: typer.Typer) -> None:
    app.add_typer(user_app, name="user")
