"""``deidgate keys list|rotate|activate|rekey``: the sealing keys of the pseudonym mappings.

Rotation never changes a pseudonym (see ``service.audit.keyring``): it changes which key seals
the stored originals. The procedure (docs/operations.md, "Rotate keys"): ``rotate`` (one host;
``--no-activate`` when several hosts must receive the file first), copy ``seal-<id>.key`` to
every host's keys folder, ``activate ID``, then ``rekey`` when the old key should stop opening
anything; ``list`` shows the rows each key still seals.
"""

from __future__ import annotations

from typing import Annotated

import typer

from service.cli.common import cli_actor, exit_for, state
from service.core.errors import DeidgateError
from service.db.session import session_scope

keys_app = typer.Typer(help="Sealing keys of the pseudonym mappings (rotation keeps linkage).",
                       no_args_is_help=True)


@keys_app.command("list")
def list_(ctx: typer.Context) -> None:
    """Each sealing key: active or not, fingerprint, rows it seals, whether this host has it."""
    from service.audit.keyring import list_keys

    st = state(ctx)
    try:
        with session_scope(st.db_url()) as s:
            rows = list_keys(s, st.keys())
    except DeidgateError as exc:
        exit_for(exc)
    typer.echo(f"{'KEY':<20} {'ACTIVE':<7} {'FINGERPRINT':<17} {'ROWS':>9}  HERE")
    for k in rows:
        typer.echo(f"{k.key_id:<20} {'yes' if k.active else '':<7} {k.fingerprint or '-':<17} "
                   f"{k.rows:>9}  {'yes' if k.present else 'MISSING'}")


@keys_app.command("rotate")
def rotate(
    ctx: typer.Context,
    activate: Annotated[bool, typer.Option(
        help="activate at once (one host); --no-activate to copy the file to other hosts "
             "first, then `keys activate ID`")] = True,
    key_id: Annotated[str | None, typer.Option("--id", help="the new key's id")] = None,
) -> None:
    """Make a new sealing key (seal-<id>.key, 0600, in the keys folder)."""
    from service.audit import keyring
    from service.core.keys import seal_key_path

    st = state(ctx)
    folder = st.settings.seal_keys_dir
    try:
        with session_scope(st.db_url()) as s:
            keys, seal = keyring.create(s, st.keys(), folder, actor=cli_actor(), key_id=key_id)
            if activate:
                keyring.activate(s, keys, seal.key_id, actor=cli_actor())
    except DeidgateError as exc:
        exit_for(exc)
    typer.echo(f"created sealing key {seal.key_id} (fingerprint {seal.fingerprint}) in {folder}")
    if activate:
        typer.echo(f"active: new mappings are sealed under {seal.key_id}; "
                   "`deidgate keys rekey` re-seals the older rows")
    else:
        typer.echo(f"copy {seal_key_path(folder, seal.key_id)} to every host, then "
                   f"`deidgate keys activate {seal.key_id}`")


@keys_app.command("activate")
def activate_(ctx: typer.Context,
              key_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Seal new mappings under ID, on every host (it must hold the key file)."""
    from service.audit import keyring

    st = state(ctx)
    try:
        with session_scope(st.db_url()) as s:
            keyring.activate(s, st.keys(), key_id, actor=cli_actor())
    except DeidgateError as exc:
        exit_for(exc)
    typer.echo(f"active sealing key: {key_id}")


@keys_app.command("rekey")
def rekey_(
    ctx: typer.Context,
    batch: Annotated[int, typer.Option(min=1, help="rows per transaction")] = 500,
    limit: Annotated[int | None, typer.Option(min=1, help="stop after this many rows")] = None,
) -> None:
    """Re-seal every mapping row not under the active key (pseudonyms do not change)."""
    from service.audit import keyring

    st = state(ctx)
    try:
        with session_scope(st.db_url()) as s:
            n = keyring.rekey(s, st.keys(), actor=cli_actor(), batch=batch, limit=limit)
    except DeidgateError as exc:
        exit_for(exc)
    typer.echo(f"re-sealed {n} mapping row(s) under the active key")


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
