"""Security tests: a throw-away PKI per session (tests/peers/certs.py), TLS peers around it."""

from __future__ import annotations

import pytest

from tests.peers.certs import TestPki


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return TestPki(tmp_path_factory.mktemp("pki"))
