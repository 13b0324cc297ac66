"""The quarantine spool: identified instances, written durably before the sender hears success.

A file appears under its final name only after all of its bytes are on disk (temp file in the same
folder, fsync, atomic rename, fsync of the folder), so an association aborted mid-transfer or a
crash leaves at most a ``.part`` file that nothing reads and ``sweep_partials`` removes, or (a crash
between the rename and the caller's insert) a final-named file without a row, which start-up
recovery registers (service.dicom.orphans). Names are random: never derived from patient data.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterable
from pathlib import Path

from service.core.config import Settings
from service.core.fsync import fsync_dir
from service.core.queues import node_name

_PART = ".part"


class SpoolFull(Exception):
    """Free space is below the configured floor; the sender must be told 0xA700."""


class Spool:
    """``quarantine``: where start-up recovery puts spool files it cannot register (see
    service.dicom.orphans); None keeps them in place. ``node``: the host this spool is on
    (``service.core.queues.node_name``), recorded with every file received into it so that its
    de-identification goes to that host's queue; "local" suits a single-host tool or test."""

    def __init__(self, root: Path, *, free_floor_bytes: int = 0,
                 quarantine: Path | None = None, node: str = "local") -> None:
        self.root = Path(root)
        self.node = node
        self.free_floor_bytes = free_floor_bytes
        self.quarantine = Path(quarantine) if quarantine is not None else None
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)

    @classmethod
    def for_settings(cls, settings: Settings) -> Spool:
        """This host's spool, as the listener and a C-GET write into it."""
        return cls(settings.spool_dir, free_floor_bytes=settings.spool_free_floor_mb << 20,
                   quarantine=settings.quarantine_dir, node=node_name(settings))

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

    def check_room(self, incoming: int) -> None:
        """Refuse when keeping ``incoming`` bytes would leave less than the floor."""
        if self.free_bytes() - incoming < self.free_floor_bytes:
            raise SpoolFull("spool free space below the configured floor")

    def write(self, chunks: Iterable[bytes | memoryview]) -> tuple[Path, int]:
        """Write ``chunks`` durably under a random name; returns (path, size)."""
        token = secrets.token_hex(16)
        final = self.root / f"{token}.dcm"
        tmp = self.root / f".{token}{_PART}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        size = 0
        try:
            for chunk in chunks:
                view = memoryview(chunk)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                    size += n
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        os.close(fd)
        os.rename(tmp, final)
        fsync_dir(self.root)
        return final, size

    def open_part(self) -> tuple[Path, int]:
        """A new ``.part`` file (random name) for a dataset still arriving: (path, fd)."""
        path = self.root / f".{secrets.token_hex(16)}{_PART}"
        return path, os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)

    def commit_part(self, path: Path, fd: int) -> Path:
        """fsync, close, rename to a final name, fsync the folder: now durable."""
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        final = self.root / f"{secrets.token_hex(16)}.dcm"
        os.rename(path, final)
        fsync_dir(self.root)
        return final

    def discard(self, path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            Path(path).unlink()

    def sweep_partials(self) -> int:
        """Remove ``.part`` leftovers of a crash; call at start-up before accepting data."""
        n = 0
        for p in self.root.glob(f".*{_PART}"):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                n += 1
        return n
