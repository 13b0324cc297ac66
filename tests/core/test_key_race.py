"""Several processes starting at once (listener, API, workers of one machine) on a data folder
without a site key: every one of them gets the same key, none crashes, the file stays 0600."""

from __future__ import annotations

import multiprocessing
import stat
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest

from service.core.keys import SiteKeys, create_key_file, read_key_file

PROCESSES, ROUNDS = 6, 40


def _contender(root: str, rounds: int, barrier: Barrier, out: Queue) -> None:  # type: ignore[type-arg]
    """One process: in each round, wait for every other process, then load-or-create."""
    for r in range(rounds):
        barrier.wait(timeout=60)
        try:
            keys = SiteKeys.load(Path(root) / f"round-{r}" / "keys" / "site.key")
            out.put((r, keys.fingerprint))
        except BaseException as exc:  # reported to the test, which fails on it
            out.put((r, f"ERROR {type(exc).__name__}: {exc}"))


@pytest.mark.timeout(300)
def test_processes_starting_together_get_one_key(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")  # real, fresh processes, as the CLI starts them
    barrier = ctx.Barrier(PROCESSES)
    out = ctx.Queue()
    procs = [ctx.Process(target=_contender, args=(str(tmp_path), ROUNDS, barrier, out))
             for _ in range(PROCESSES)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in range(PROCESSES * ROUNDS)]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    errors = [v for _, v in results if v.startswith("ERROR")]
    assert errors == []
    by_round: dict[int, set[str]] = {}
    for r, fingerprint in results:
        by_round.setdefault(r, set()).add(fingerprint)
    assert sorted(by_round) == list(range(ROUNDS))
    assert all(len(fps) == 1 for fps in by_round.values()), by_round
    for r in range(ROUNDS):
        keys = tmp_path / f"round-{r}" / "keys"
        key = keys / "site.key"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert SiteKeys.load(key, create=False).fingerprint in by_round[r]
        assert [p.name for p in keys.iterdir()] == ["site.key"]  # no temp file left behind


def test_a_second_creator_gets_the_first_key_not_an_error(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "site.key"
    first = create_key_file(path)
    assert create_key_file(path) == first == read_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_reader_waits_for_a_key_still_being_written(tmp_path: Path) -> None:
    """A key file created but not written yet (another writer between open and write, e.g. on
    a filesystem without hard links) is waited for, not refused as too short."""
    import threading
    import time

    path = tmp_path / "site.key"
    path.touch(mode=0o600)
    want = bytes(range(32))
    timer = threading.Timer(0.3, lambda: path.write_bytes(want.hex().encode() + b"\n"))
    timer.start()
    t0 = time.monotonic()
    try:
        assert read_key_file(path) == want
    finally:
        timer.cancel()
    assert time.monotonic() - t0 >= 0.25
