"""Directory fsync, the step that makes a rename durable.

A rename (or unlink) is recorded in the folder, not the file: until the folder itself is
fsynced, a power cut can bring back the old name. The spool, the engine's output writer and the
pipeline's quarantine/delete steps all need this one call, so it lives here once.
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """fsync the folder ``path`` so renames and deletions in it survive a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
