"""Task and queue names in one place: every task has a route and a dead-letter meaning, node-bound
work goes to its host's queue, and a publish reaches the broker by name (or fails softly)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from service.core.config import Settings
from service.core.queues import TASKS, TaskName, deid_queue, node_name, queue_for, queue_names
from service.jobs.recovery import WORK
from service.jobs.routing import enqueue
from tests.peers.net import free_port


def test_every_task_has_a_route_and_a_dead_letter_meaning() -> None:
    assert set(TASKS) == set(TaskName) == set(WORK)
    assert {t.value for t in TaskName} == {
        "deidgate.resolve_job", "deidgate.retrieve_study", "deidgate.deidentify_instance",
        "deidgate.forward_study", "deidgate.sweep",
        "deidgate.score_study"}  # names in queued messages never change


def test_node_bound_work_goes_to_its_hosts_queue(home: Path) -> None:
    s = Settings(home=home, node_name="mammo1")
    assert node_name(s) == "mammo1" and deid_queue(s) == "deid.mammo1"
    assert queue_for(s, TaskName.DEIDENTIFY_INSTANCE) == "deid.mammo1"
    assert queue_for(s, TaskName.DEIDENTIFY_INSTANCE, "mammo2") == "deid.mammo2"
    assert queue_for(s, TaskName.FORWARD_STUDY) == "deid.mammo1"
    assert queue_for(s, TaskName.RETRIEVE_STUDY, "mammo2") == "default"
    assert queue_for(s, TaskName.SCORE_STUDY) == "score"  # GPU hosts, not the deid host
    assert queue_names(s) == ["default", "score", "deid.mammo1"]
    assert node_name(Settings(home=home)) != ""  # the host name by default


def _messages(home: Path) -> list[dict]:
    out = []
    for f in sorted((home / "broker" / "queue").iterdir()):
        out.append(json.loads(f.read_text()))
    return out


def _args(message: dict) -> list:
    assert message["properties"]["body_encoding"] == "base64"
    return list(json.loads(base64.b64decode(message["body"]))[0])


def test_publish_by_name_reaches_the_filesystem_broker(home: Path) -> None:
    s = Settings(home=home, node_name="mammo1")
    assert enqueue(s, TaskName.DEIDENTIFY_INSTANCE, "17", node="mammo2")
    assert enqueue(s, TaskName.SWEEP)
    sent = {m["headers"]["task"]: m for m in _messages(home)}
    deid = sent["deidgate.deidentify_instance"]
    assert deid["properties"]["delivery_info"]["routing_key"] == "deid.mammo2"
    assert _args(deid) == [17]  # the target as the task takes it (an int)
    assert _args(sent["deidgate.sweep"]) == []


def test_a_broker_that_is_down_is_logged_not_raised(home: Path) -> None:
    s = Settings(home=home, broker_url=f"redis://127.0.0.1:{free_port()}/0")
    assert enqueue(s, TaskName.RESOLVE_JOB, "0" * 32) is False  # the sweep sends it later
