"""What every command shares: the settings object, the database, the site keys, error exits."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError
from sqlalchemy.orm import Session

from service.core import logs
from service.core.config import Settings, load_settings
from service.core.errors import ConfigurationError, DeidgateError
from service.core.keys import SiteKeys
from service.core.queues import node_name
from service.db.session import session_scope

T = TypeVar("T")


class _State:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._keys: SiteKeys | None = None
        self._db_ready = False

    def keys(self) -> SiteKeys:
        """The site keys; also installs the ATNA exporter (a command that needs the keys logs
        audit events, and they go to the audit repository as well when one is configured)."""
        if self._keys is None:
            self._keys = SiteKeys.for_settings(self.settings)
            from service.audit import atna_export

            if atna_export.current() is None:
                atna_export.configure(self.settings, announce=False)
        return self._keys

    def db_url(self) -> str:
        """The database URL, migrated to head on first use (an empty database is upgraded)."""
        if not self._db_ready:
            from service.db.migrate import ensure_schema

            self.settings.home.mkdir(parents=True, exist_ok=True)
            ensure_schema(self.settings.db_url, default_node=node_name(self.settings),
                          cache_dir=self.settings.home / "cache")
            self._db_ready = True
        return self.settings.db_url


def init_context(ctx: Any) -> None:
    """Attach the one settings object to a (root) click/typer context."""
    if ctx.obj is None:
        try:
            ctx.obj = _State(load_settings())
        except ValidationError as exc:  # pydantic validation of env settings
            fail(f"invalid settings: {settings_errors(exc)}", code=2)
        logs.install(ctx.obj.settings, level=logging.WARNING)  # `serve` raises it to INFO


def settings_errors(exc: ValidationError) -> str:
    """Which settings are wrong and how, never the rejected values (a database URL with its
    password, a path named after a patient)."""
    return "; ".join(f"DEIDGATE_{'_'.join(map(str, e['loc'])).upper()}: {e['type']}"
                     for e in exc.errors(include_input=False, include_url=False))


def state(ctx: typer.Context) -> _State:
    root = ctx.find_root()
    if root.obj is None:
        init_context(root)
    obj: _State = root.obj
    return obj


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def exit_for(exc: DeidgateError) -> NoReturn:
    """Turn a deidgate error into a specific message and exit status (2 = configuration)."""
    fail(f"{exc.code}: {exc.reason}", code=2 if isinstance(exc, ConfigurationError) else 1)


def transact(ctx: typer.Context, op: Callable[[Session], T], *, seed_dicom: bool = False) -> T:
    """Run ``op`` in one transaction on the (migrated) database; a deidgate error exits with its
    code and reason. ``seed_dicom``: first seed the local AE, nodes and allow-list from the
    settings and config file (what the DICOM commands read)."""
    st = state(ctx)
    try:
        url = st.db_url()
        if seed_dicom:
            from service.dicom import admin  # imported when used: every command loads this

            with session_scope(url) as s:
                admin.seed_from_settings(s, st.settings)
        with session_scope(url) as s:
            return op(s)
    except DeidgateError as exc:
        exit_for(exc)


def cli_actor() -> str:
    """Who ran the command, for the audit log (the login name; never a patient's anything)."""
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no passwd entry (containers)
        return "cli"


def audit(ctx: typer.Context, session: Session, kind: str, **details: object) -> None:
    """Record a configuration change in the hash-chained log, in the change's transaction
    (and so in the ATNA feed when it commits)."""
    from service.audit import AuditStore

    AuditStore(session, state(ctx).keys()).log_event(kind, actor=cli_actor(), details=details)


def is_tty() -> bool:
    return sys.stderr.isatty()


@contextmanager
def stop_signals() -> Iterator[threading.Event]:
    """Ctrl-C and SIGTERM set an event instead of killing the process mid-write."""
    stop = threading.Event()
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in old:
        signal.signal(s, lambda *_: stop.set())
    try:
        yield stop
    finally:
        for s, h in old.items():
            signal.signal(s, h)
