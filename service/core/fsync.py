"""Durable file steps: a rename, a move, a new file that must survive a power cut.

A rename (or unlink) is recorded in the folder, not the file: until the folder itself is
fsynced, a power cut can bring back the old name. The spool, the engine's output writer and the
pipeline's quarantine/delete steps all need this, so it lives here once.

A move between filesystems (spool on one disk, quarantine on another) is not a rename but a copy
and a delete. ``shutil.move`` fsyncs neither the copy nor either folder, so a power cut right
after it can leave the file at neither place: the spool's unlink reached the disk, the copy's
bytes did not. ``move_durably`` orders it so that at every instant the file is complete at its
source, at its destination, or at both.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
from pathlib import Path

_COPY_CHUNK = 1 << 20


def fsync_dir(path: Path) -> None:
    """fsync the folder ``path`` so renames and deletions in it survive a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """``data`` under ``path``, all or nothing: temp file, fsync, rename, folder fsync."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def move_durably(src: Path, dest: Path) -> Path:
    """Move ``src`` to ``dest`` (an existing folder's new name) so a crash loses nothing.

    Same filesystem: fsync the file, rename, fsync both folders. Across filesystems: copy to a
    temp name beside ``dest``, fsync it, rename it to ``dest``, fsync that folder, and only then
    unlink ``src`` and fsync its folder. A crash in between leaves both copies (never none)."""
    src, dest = Path(src), Path(dest)
    fsync_file(src)
    try:
        os.rename(src, dest)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        _copy_durably(src, dest)
        os.unlink(src)
        fsync_dir(src.parent)
        return dest
    fsync_dir(dest.parent)
    if dest.parent.resolve() != src.parent.resolve():
        fsync_dir(src.parent)
    return dest


def _copy_durably(src: Path, dest: Path) -> None:
    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out, src.open("rb") as inp:
            shutil.copyfileobj(inp, out, _COPY_CHUNK)
            out.flush()
            os.chmod(tmp, stat.S_IMODE(src.stat().st_mode))
            os.fsync(out.fileno())
        os.rename(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(dest.parent)
