"""Records, in order, every fsync (by the path its descriptor names), rename and unlink.

A power cut cannot be produced on a test machine, so durability is checked by what it rests on:
which files and folders reach ``fsync``, and in which order relative to the renames and unlinks.
The spy wraps the real calls; nothing is faked."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest


class FsyncSpy:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def index(self, kind: str, path: Path | str) -> int:
        """Position of the first ``kind`` event on ``path`` (-1 if none)."""
        want = os.path.realpath(path)
        for i, (k, p) in enumerate(self.events):
            if k == kind and p == want:
                return i
        return -1

    def fsynced(self) -> list[str]:
        return [p for k, p in self.events if k == "fsync"]


def install(monkeypatch: pytest.MonkeyPatch) -> FsyncSpy:
    spy = FsyncSpy()
    real_fsync, real_rename, real_replace, real_unlink = os.fsync, os.rename, os.replace, \
        os.unlink

    def fsync(fd: Any) -> None:
        fileno = fd if isinstance(fd, int) else fd.fileno()
        spy.events.append(("fsync", os.readlink(f"/proc/self/fd/{fileno}")))
        real_fsync(fd)

    def rename(src: Any, dst: Any, *a: Any, **kw: Any) -> None:
        real_rename(src, dst, *a, **kw)
        spy.events.append(("rename", os.path.realpath(dst)))

    def replace(src: Any, dst: Any, *a: Any, **kw: Any) -> None:
        real_replace(src, dst, *a, **kw)
        spy.events.append(("rename", os.path.realpath(dst)))

    def unlink(path: Any, *a: Any, **kw: Any) -> None:
        spy.events.append(("unlink", os.path.realpath(path)))
        real_unlink(path, *a, **kw)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "unlink", unlink)
    return spy
