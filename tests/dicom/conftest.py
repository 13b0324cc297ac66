"""Fixtures for the DICOM edge tests: the shared real-peer fixtures plus a migrated database."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.db.migrate import upgrade
from tests.peers.fixtures import *  # noqa: F403


@pytest.fixture()
def sqlite_db(tmp_path: Path) -> str:
    """For tests where the database back-end does not matter (the listener's protocol edges)."""
    url = f"sqlite:///{tmp_path / 'deidgate.db'}"
    upgrade(url)
    return url
