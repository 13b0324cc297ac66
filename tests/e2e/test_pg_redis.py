"""End to end on PostgreSQL + Redis: a worker SIGKILLed mid-task and restarted, and Redis
restarted (losing every queued message) mid-job; the job finishes with nothing lost and nothing
duplicated."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from service.db.models.jobs import JobInstance
from service.db.session import get_sessionmaker
from tests.e2e.harness import gateway, make_settings, redis_server
from tests.e2e.test_embedded import check_output

pytestmark = pytest.mark.integration


def test_worker_killed_and_redis_restarted_mid_job(tmp_path: Path, pg_url: str) -> None:
    n_exams = 5
    with redis_server(tmp_path) as (broker, restart_redis):
        st = make_settings(tmp_path, db_url=pg_url, broker_url=broker)
        with gateway(tmp_path, st, n_exams=n_exams, concurrency=1) as gw:
            job_id = gw.submit()
            # 1. SIGKILL the worker while it holds an instance (a claimed row in "processing")
            gw.wait(job_id, until=lambda j: j["counts"]["instances_deidentified"] >= 2)
            deadline = time.monotonic() + 30
            for _try in range(5):  # a task can finish between the look and the SIGKILL
                while gw.instance_states().get("processing", 0) == 0:
                    assert time.monotonic() < deadline, "never caught the worker mid-task"
                    time.sleep(0.002)
                gw.kill_workers()
                if gw.instance_states().get("processing", 0) >= 1:
                    break
                gw.start_workers()  # missed it: the next instance's task, not this scenario
            states = gw.instance_states()
            assert states.get("processing", 0) >= 1  # killed mid-task: a claim is left behind
            before = gw.job(job_id)["counts"]["instances_deidentified"]
            # 2. Redis restarts while no worker runs: every queued message is lost
            restart_redis()
            gw.start_workers()
            # 3. ... and once more while the new worker is busy
            gw.wait(job_id, until=lambda j: j["counts"]["instances_deidentified"] >= before + 2
                    or j["state"] == "done")
            restart_redis()
            job = gw.wait(job_id, timeout=120)
            assert job["state"] == "done", job
            c = job["counts"]
            n = 4 * n_exams
            assert (c["instances_expected"], c["instances_received"],
                    c["instances_deidentified"], c["dead_letters"]) == (n, n, n, 0)
            with get_sessionmaker(gw.db_url)() as s:  # one row per instance, all written
                assert s.scalar(select(func.count()).select_from(JobInstance)) == n
            assert gw.instance_states() == {"written": n}
            check_output(gw, job, n)  # every instance exactly once; mappings; chain intact
