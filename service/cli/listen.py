"""``deidgate listen``: the C-STORE listener alone, in the foreground, until Ctrl-C.

For connectivity checks and benchmarks; received instances are also queued for
de-identification (``--no-queue`` only spools and records them).
"""

from __future__ import annotations

import functools
from typing import Annotated, Any

import typer

from service.cli.common import exit_for, state, stop_signals
from service.core.errors import DeidgateError


def listen(
    ctx: typer.Context,
    port: Annotated[int | None, typer.Option("--port", help="override the stored port")] = None,
    host: Annotated[str | None, typer.Option("--host", help="override the bind address")] = None,
    queue: Annotated[bool, typer.Option("--queue/--no-queue",
                                        help="queue de-identification of arrivals")] = True,
) -> None:
    """Receive into the spool until Ctrl-C (or SIGTERM); stops cleanly."""
    # imported when used: every `deidgate` command loads this module
    from service.audit.process import child_hook, start_process
    from service.dicom.listener_group import ListenerGroup
    from service.jobs.on_stored import make_on_stored

    st = state(ctx)
    try:
        start_process(st.settings, "listener")
    except DeidgateError as exc:
        exit_for(exc)
    # each listener process starts itself and builds its hook from the settings
    factory = functools.partial(child_hook, st.settings, "listener",
                                functools.partial(make_on_stored, st.settings) if queue
                                else None)
    overrides: dict[str, Any] = {}
    if port is not None:
        overrides["port"] = port
    if host is not None:
        overrides["host"] = host
    try:
        listener = ListenerGroup.from_settings(st.settings, db_url=st.db_url(), keys=st.keys(),
                                               on_stored_factory=factory, **overrides)
    except DeidgateError as exc:
        exit_for(exc)
    with stop_signals() as stop:
        try:
            listener.start()  # a TLS key or certificate that does not load stops here
        except DeidgateError as exc:
            exit_for(exc)
        c = listener.config
        n = getattr(listener, "processes", 1)
        plain = f"{c.host}:{listener.port}" if c.plain else "no plain port"
        tls = f", DICOM TLS on port {listener.tls_port}" if listener.tls_port is not None else ""
        typer.echo(f"listening as {c.ae_title} on {plain}{tls} (max PDU "
                   f"{c.max_pdu}, {n} process{'es' if n > 1 else ''}); "
                   f"spool {st.settings.spool_dir}; Ctrl-C stops", err=True)
        listener.serve_forever(stop)
    typer.echo("listener stopped", err=True)


def register(app: typer.Typer) -> None:
    app.command("listen")(listen)
