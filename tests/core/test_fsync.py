"""Durable moves: across filesystems (the spool on one disk, quarantine on another) the copy is
fsynced and named before the source is removed, and both folders are fsynced; a crash at any
point leaves the file at its source, its destination, or both, never at neither."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.core import fsync
from service.core.errors import Rejected
from tests.core.fsync_spy import install
from workers.deid.pipeline import quarantine_file


@pytest.fixture()
def other_fs(tmp_path: Path) -> Iterator[Path]:
    """A folder on another filesystem than tmp_path: /dev/shm is a tmpfs in every container."""
    d = Path(tempfile.mkdtemp(dir="/dev/shm", prefix="deidgate-test-"))
    assert os.stat(d).st_dev != os.stat(tmp_path).st_dev, "need two filesystems"
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _source(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    src = folder / "0123456789abcdef0123456789abcdef.dcm"
    fd = os.open(src, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, b"DICM" * 5000)
    os.close(fd)
    return src


def _check_order(spy, src: Path, dest: Path) -> None:  # type: ignore[no-untyped-def]
    named = spy.index("rename", dest)
    assert named >= 0, spy.events
    # the copy's bytes were fsynced before it got its name (it was a temp file then)
    assert any(k == "fsync" and Path(p).parent == dest.parent.resolve()
               for k, p in spy.events[:named]), spy.events
    dest_dir = spy.index("fsync", dest.parent)
    gone = spy.index("unlink", src)
    assert named < dest_dir < gone, spy.events  # durable at the destination before removal
    src_dir = max(i for i, (k, p) in enumerate(spy.events)
                  if k == "fsync" and p == os.path.realpath(src.parent))
    assert src_dir > gone, spy.events  # and the removal itself made durable


def test_cross_device_move_fsyncs_the_file_and_both_folders(
        tmp_path: Path, other_fs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = _source(tmp_path / "spool")
    dest = other_fs / "quarantine" / "q.dcm"
    dest.parent.mkdir()
    data = src.read_bytes()
    spy = install(monkeypatch)
    assert fsync.move_durably(src, dest) == dest
    assert not src.exists() and dest.read_bytes() == data
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    assert [p.name for p in dest.parent.iterdir()] == ["q.dcm"]  # no temp file left
    _check_order(spy, src, dest)


def test_same_device_move_is_a_rename_with_both_folders_fsynced(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = _source(tmp_path / "spool")
    dest = tmp_path / "quarantine" / "q.dcm"
    dest.parent.mkdir()
    spy = install(monkeypatch)
    fsync.move_durably(src, dest)
    assert not src.exists() and dest.exists()
    assert ("unlink", os.path.realpath(src)) not in spy.events  # a rename, not a copy
    renamed = spy.index("rename", dest)
    assert renamed < spy.index("fsync", dest.parent)
    assert renamed < spy.index("fsync", src.parent)


def test_quarantine_across_filesystems_is_durable(
        tmp_path: Path, other_fs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = _source(tmp_path / "spool")
    dest = other_fs / "quarantine" / "refused.dcm"
    spy = install(monkeypatch)
    quarantine_file(src, dest, Rejected("no rule for this SOP class", code="test-refusal"),
                    source="test")
    assert dest.exists() and dest.with_suffix(".json").exists() and not src.exists()
    _check_order(spy, src, dest)
    assert spy.index("fsync", dest.with_suffix(".json.tmp")) >= 0  # the reason, before rename
