"""Queue and task names, node naming, broker options and a publish-only Celery client.

The bottom layer between the service and the workers: the API, the CLI, the listener hook and
the jobs layer publish tasks BY NAME through ``Publisher``; they never import the Celery app
(``workers.celery_app``) or the tasks (``workers.tasks``), and the worker app takes its queues
and broker settings from here, so both sides agree on every name.

Queues:
- ``deid.<node>``: de-identification (and forwarding, which reads the output store), consumed
  only on the host whose listener spools the identified files: identified data never crosses
  the network. ``<node>`` is ``DEIDGATE_NODE_NAME`` (the host name by default).
- ``score``: scoring (``score_study``): hosts with the model, a GPU when there is one.
- ``default``: resolving (C-FIND), retrieving (C-MOVE/C-GET), the sweep.

Broker: Redis (or any Celery broker) when ``DEIDGATE_BROKER_URL`` is set; otherwise kombu's
filesystem transport in the data folder, which needs no server. Either way the database, not
the broker, is the record of what is unfinished (see ``service.jobs.recovery.sweep``).
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from service.core.config import Settings

DEFAULT_QUEUE = "default"
SCORE_QUEUE = "score"


class TaskName(StrEnum):
    """The registered names of the tasks (stable: messages in a broker carry them)."""

    RESOLVE_JOB = "deidgate.resolve_job"
    RETRIEVE_STUDY = "deidgate.retrieve_study"
    DEIDENTIFY_INSTANCE = "deidgate.deidentify_instance"
    FORWARD_STUDY = "deidgate.forward_study"
    SWEEP = "deidgate.sweep"
    SCORE_STUDY = "deidgate.score_study"


@dataclass(frozen=True)
class TaskRoute:
    """Where a task is published and what its one argument is (the id of its row)."""

    on_node: bool  # True: the deid.<node> queue of the host holding the files; else default
    target: type[int] | type[str] | None  # None: the task takes no target
    queue: str | None = None  # a fixed queue (score) instead of default


TASKS: dict[TaskName, TaskRoute] = {
    TaskName.RESOLVE_JOB: TaskRoute(on_node=False, target=str),
    TaskName.RETRIEVE_STUDY: TaskRoute(on_node=False, target=int),
    TaskName.DEIDENTIFY_INSTANCE: TaskRoute(on_node=True, target=int),
    TaskName.FORWARD_STUDY: TaskRoute(on_node=True, target=int),
    TaskName.SWEEP: TaskRoute(on_node=False, target=None),
    # GPU hosts read the output store (shared or local): the score queue, not a node's
    TaskName.SCORE_STUDY: TaskRoute(on_node=False, target=int, queue=SCORE_QUEUE),
}


def node_name(settings: Settings) -> str:
    """This host's name in queue names and job rows (``DEIDGATE_NODE_NAME`` or the host name)."""
    return settings.node_name or socket.gethostname().split(".")[0] or "local"


def deid_queue(settings: Settings, node: str | None = None) -> str:
    """De-identification runs on the host whose spool holds the identified file."""
    return f"deid.{node or node_name(settings)}"


def queue_for(settings: Settings, task: TaskName, node: str | None = None) -> str:
    """The queue a task is published on; ``node`` names the host for node-bound tasks."""
    route = TASKS[task]
    if route.on_node:
        return deid_queue(settings, node)
    return route.queue or DEFAULT_QUEUE


def queue_names(settings: Settings) -> list[str]:
    """Every queue this host's workers may consume."""
    return [DEFAULT_QUEUE, SCORE_QUEUE, deid_queue(settings)]


def broker_options(settings: Settings) -> tuple[str, dict[str, Any]]:
    """Broker URL and transport options; the filesystem broker's folders are made here."""
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


def celery_conf(settings: Settings) -> dict[str, Any]:
    """What publishers and workers must agree on: queues, routing defaults, serialization."""
    from kombu import Queue  # celery's own dependency; loaded with the first publisher

    _, transport = broker_options(settings)
    return {
        "task_queues": [Queue(q) for q in queue_names(settings)],
        "task_default_queue": DEFAULT_QUEUE,
        "task_create_missing_queues": True,
        "broker_transport_options": transport,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "timezone": "UTC",
    }


class Publisher:
    """Sends tasks by name; holds no task code, so publishing needs no worker modules."""

    def __init__(self, settings: Settings) -> None:
        from celery import Celery  # imported when the first task is published, not at start-up

        url, _ = broker_options(settings)
        self._app = Celery("deidgate-publisher", broker=url, set_as_current=False)
        self._app.conf.update(celery_conf(settings))

    def send(self, task: TaskName, args: list[Any], *, queue: str) -> None:
        """Publish; raises whatever the broker raises (callers decide what a failure means)."""
        self._app.send_task(str(task), args=args, queue=queue)


_lock = threading.Lock()
_publishers: dict[int, tuple[Settings, Publisher]] = {}


def publisher_for(settings: Settings) -> Publisher:
    """One publisher per settings object per process (API, listener, CLI, workers)."""
    with _lock:
        hit = _publishers.get(id(settings))
        if hit is None or hit[0] is not settings:
            hit = (settings, Publisher(settings))
            _publishers[id(settings)] = hit
        return hit[1]
