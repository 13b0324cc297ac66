"""pytest fixtures around the real peers; import them in a conftest with
``from tests.peers.fixtures import *  # noqa: F403``.

- ``gateway_port``: a free port chosen per module for the gateway's listener (AE ``DEIDGATE``),
  so that Orthanc can be configured with it before any listener starts.
- ``orthanc_pacs``: Orthanc (module scope) knowing ``DEIDGATE`` at ``gateway_port`` as a
  query/retrieve peer and C-MOVE destination, and ``GETTER`` for C-GET.
- ``start_listener(db_url, keys, spool_dir, **config)``: a running gateway listener, stopped at
  teardown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from service.core.keys import SiteKeys
from service.dicom.listener import Listener, ListenerConfig
from service.dicom.spool import Spool
from tests.peers.net import free_port
from tests.peers.orthanc import OrthancPeer, orthanc_server

GATEWAY_AE = "DEIDGATE"
GETTER_AE = "GETTER"


@pytest.fixture(scope="module")
def gateway_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def orthanc_pacs(tmp_path_factory: pytest.TempPathFactory,
                 gateway_port: int) -> Iterator[OrthancPeer]:
    with orthanc_server(tmp_path_factory.mktemp("orthanc"), modalities={
        "deidgate": (GATEWAY_AE, "127.0.0.1", gateway_port),
        "getter": (GETTER_AE, "127.0.0.1", 9),
    }) as peer:
        yield peer


@pytest.fixture()
def start_listener() -> Iterator[Callable[..., Listener]]:
    started: list[Listener] = []

    def _start(db_url: str, keys: SiteKeys, spool_dir: Path, *, free_floor_bytes: int = 0,
               on_stored: Callable[[int], None] | None = None, **config: Any) -> Listener:
        config.setdefault("ae_title", GATEWAY_AE)
        config.setdefault("host", "127.0.0.1")
        config.setdefault("port", 0)
        config.setdefault("allow_cache_s", 0.0)
        listener = Listener(ListenerConfig(**config), db_url=db_url, keys=keys,
                            spool=Spool(spool_dir, free_floor_bytes=free_floor_bytes),
                            on_stored=on_stored)
        started.append(listener.start())
        return listener

    try:
        yield _start
    finally:
        for listener in started:
            listener.stop()
