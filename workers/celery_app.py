"""The Celery application the workers run: its tasks, and the worker's settings.

Queue names, task names, broker options and what publishers and workers must agree on are in
``service.core.queues`` (the service layer publishes through it and never imports this module).
The database, not the broker, is the record of what is unfinished: a lost message is
re-enqueued by the sweep (``service.jobs.recovery.sweep``), run here on the listener's host.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import Celery
from celery.signals import setup_logging, worker_process_init, worker_ready, worker_shutdown

from service.audit.process import start_process
from service.core import logs
from service.core.config import Settings, load_settings
from service.core.queues import broker_options, celery_conf, deid_queue
from service.jobs import policy_check
from workers.tasks.base import site_keys
from workers.tasks.deid import deidentifier
from workers.tasks.sweep import run_sweep

log = logging.getLogger(__name__)

TASK_MODULES = [f"workers.tasks.{m}" for m in ("resolve", "retrieve", "deid", "forward", "sweep",
                                                 "score")]


class DeidgateCelery(Celery):
    """A Celery app that carries the one Settings object its tasks use."""

    settings: Settings


def create_celery(settings: Settings) -> DeidgateCelery:
    url, _ = broker_options(settings)
    app = DeidgateCelery("deidgate", broker=url, include=TASK_MODULES, set_as_current=False)
    app.settings = settings
    app.conf.update(
        celery_conf(settings),
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # On a broker connection loss, stop the tasks in flight (they are idempotent and are
        # redone): acking one over the dead connection wedges the consumer (celery#8030 kind).
        worker_cancel_long_running_tasks_on_connection_loss=True,
        worker_hijack_root_logger=False,
        # remote control and events need fanout exchanges, which the filesystem broker lacks
        worker_enable_remote_control=bool(settings.broker_url),
        worker_send_task_events=False,
    )
    return app


app: DeidgateCelery  # built on first access, below


def __getattr__(name: str) -> Any:
    """``celery -A workers.celery_app worker``: the worker process is an edge; it builds its
    settings from the environment once, here."""
    if name in ("app", "celery"):
        global app
        app = create_celery(load_settings())
        return app
    raise AttributeError(name)


def _sweeper(app: DeidgateCelery, stop: threading.Event) -> None:
    startup = True
    while not stop.is_set():
        try:
            run_sweep(app.settings, startup=startup)
            startup = False
        except Exception as exc:  # the database may be restarting; try again next round
            logging.getLogger("deidgate.sweep").warning("sweep failed (%s); retrying",
                                                        type(exc).__name__)
        stop.wait(app.settings.sweep_interval_s)


_stop = threading.Event()


@setup_logging.connect
def _logging(loglevel: Any = None, **_: Any) -> None:
    """The worker's logging is ours (Celery then configures none): one handler with the PHI
    filters, so a task's exception, pydicom's warnings and Celery's own lines pass them."""
    current = globals().get("app")
    level = loglevel if isinstance(loglevel, int) else logging.getLevelName(loglevel or "INFO")
    logs.install(getattr(current, "settings", None), level=level if isinstance(level, int)
                 else logging.INFO)


@worker_ready.connect
def _start_sweeper(sender: Any = None, **_: Any) -> None:
    """The worker on the listener's host (it consumes this node's deid queue) sweeps: only it
    can see the spool, and one sweeper per host is enough; claims make overlaps harmless."""
    app = getattr(sender, "app", None)
    if not isinstance(app, DeidgateCelery):
        return
    consumed = {q.name for q in app.amqp.queues.consume_from.values()} if \
        app.amqp.queues.consume_from else set(app.amqp.queues)
    if deid_queue(app.settings) in consumed:
        threading.Thread(target=_sweeper, args=(app, _stop), daemon=True,
                         name="deidgate-sweeper").start()


@worker_shutdown.connect
def _stop_sweeper(**_: Any) -> None:
    _stop.set()


@worker_process_init.connect
def _warm_up(**_: Any) -> None:
    """Start the pool process (JSON logs, key check, metrics, ATNA: service.audit.process),
    then load the engine and the default policy once, before the first task: the first
    de-identification of a job should not pay for imports and YAML parsing."""
    current = globals().get("app")
    settings = getattr(current, "settings", None)
    if settings is None:
        return
    start_process(settings, "worker", create_key=False)
    try:
        deidentifier(settings.default_policy, site_keys(settings), settings.project)
    except Exception as exc:  # a broken policy is reported by the task that needs it
        log.warning("warm-up failed (%s)", type(exc).__name__)
    else:  # submissions of jobs with this policy need not load it again to check it
        policy_check.remember(settings, settings.default_policy)
