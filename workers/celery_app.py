"""The Celery application: queues, broker choice, and the worker's settings.

Queues:
- ``deid.<node>``: de-identification, consumed only on the host whose listener spools the
  identified files (identified data never crosses the network); ``<node>`` is
  ``DEIDGATE_NODE_NAME`` (the host name by default), so a multi-host deployment routes per host.
- ``score``: GPU hosts (filled by the scoring issue).
- ``default``: resolving (C-FIND), retrieving (C-MOVE/C-GET), forwarding, the sweep.

Broker: Redis (or any Celery broker) when ``DEIDGATE_BROKER_URL`` is set; otherwise kombu's
filesystem transport in the data folder, which needs no server, so one machine runs everything
from one command. Either way the database, not the broker, is the record of what is unfinished:
a lost message is re-enqueued by the sweep (see service.jobs.orchestrate.sweep).
"""

from __future__ import annotations

import threading
from typing import Any

from celery import Celery
from celery.signals import worker_process_init, worker_ready, worker_shutdown
from kombu import Queue

from service.core.config import Settings, load_settings

TASK_MODULES = ["workers.tasks"]


class DeidgateCelery(Celery):
    """A Celery app that carries the one Settings object its tasks use."""

    settings: Settings


def broker_options(settings: Settings) -> tuple[str, dict[str, Any]]:
    if settings.broker_url:
        return settings.broker_url, {"visibility_timeout": 3600}
    folder = settings.home / "broker"
    for sub in ("queue", "processed", "control"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    return "filesystem://", {
        "data_folder_in": str(folder / "queue"),
        "data_folder_out": str(folder / "queue"),
        "processed_folder": str(folder / "processed"),
        # exchange bindings; kombu's default is "control" relative to the working directory
        "control_folder": str(folder / "control"),
        "store_processed": False,
        "polling_interval": 0.1,
    }


def create_celery(settings: Settings) -> DeidgateCelery:
    from service.jobs.orchestrate import deid_queue

    url, transport = broker_options(settings)
    app = DeidgateCelery("deidgate", broker=url, include=TASK_MODULES, set_as_current=False)
    app.settings = settings
    queues = [Queue("default"), Queue("score"), Queue(deid_queue(settings))]
    app.conf.update(
        task_queues=queues,
        task_default_queue="default",
        task_create_missing_queues=True,
        broker_transport_options=transport,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        worker_prefetch_multiplier=1,
        # On a broker connection loss, stop the tasks in flight (they are idempotent and are
        # redone): acking one over the dead connection wedges the consumer (celery#8030 kind).
        worker_cancel_long_running_tasks_on_connection_loss=True,
        worker_hijack_root_logger=False,
        task_serializer="json",
        accept_content=["json"],
        # remote control and events need fanout exchanges, which the filesystem broker lacks
        worker_enable_remote_control=bool(settings.broker_url),
        worker_send_task_events=False,
        timezone="UTC",
    )
    return app


_lock = threading.Lock()
_apps: dict[int, tuple[Settings, DeidgateCelery]] = {}


def celery_for(settings: Settings) -> DeidgateCelery:
    """One app per settings object per process (publishers: API, listener, CLI)."""
    with _lock:
        hit = _apps.get(id(settings))
        if hit is None or hit[0] is not settings:
            hit = (settings, create_celery(settings))
            _apps[id(settings)] = hit
        return hit[1]


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
    import logging

    from workers.tasks import run_sweep

    log = logging.getLogger("deidgate.sweep")
    startup = True
    while not stop.is_set():
        try:
            run_sweep(app.settings, startup=startup)
            startup = False
        except Exception as exc:  # the database may be restarting; try again next round
            log.warning("sweep failed (%s); retrying", type(exc).__name__)
        stop.wait(app.settings.sweep_interval_s)


_stop = threading.Event()


@worker_ready.connect
def _start_sweeper(sender: Any = None, **_: Any) -> None:
    """The worker on the listener's host (it consumes this node's deid queue) sweeps: only it
    can see the spool, and one sweeper per host is enough; claims make overlaps harmless."""
    from service.jobs.orchestrate import deid_queue

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
    """Load the engine and the default policy once per pool process, before the first task:
    the first de-identification of a job should not pay for imports and YAML parsing."""
    import logging

    from workers import tasks

    app = tasks.deidentify_instance.app
    settings = getattr(app, "settings", None)
    if settings is None:
        return
    try:
        tasks.deidentifier(settings.default_policy, settings.site_key_path, settings.project)
    except Exception as exc:  # a broken policy is reported by the task that needs it
        logging.getLogger(__name__).warning("warm-up failed (%s)", type(exc).__name__)
