"""ATNA over syslog against a real loopback receiver: delivery, RFC 5424 framing and content
over UDP, TCP and TLS; never blocking; drops counted; reconnection loses nothing."""

from __future__ import annotations

import os
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from service.audit.atna_export import AtnaExporter
from service.audit.syslog import BOM, MSGID, SyslogSender, frame, octet_counted
from service.core.config import Settings
from service.core.tls import ClientCert, client_context, server_context
from tests.peers.certs import TestPki
from tests.peers.net import free_port
from tests.peers.syslog import Receiver, parse, syslog_receiver
from tests.security.test_atna import MESSAGES, PHI, SOURCE

pytestmark = pytest.mark.integration


def _server_ctx(pki: TestPki) -> ssl.SSLContext:
    leaf = pki.leaf("audit-repository")
    return server_context(leaf.cert, leaf.key, pki.ca, client_cert=ClientCert.required)


def _client_ctx(pki: TestPki, ca: Path | None = None) -> ssl.SSLContext:
    ours = pki.leaf("DEIDGATE")
    return client_context(ca or pki.ca, ours.cert, ours.key)


@contextmanager
def sender(rx_port: int, transport: str, ctx: ssl.SSLContext | None = None,
           **kw: object) -> Iterator[SyslogSender]:
    s = SyslogSender("localhost" if transport == "tls" else "127.0.0.1", rx_port,
                     transport, ssl_context=ctx, **kw)  # type: ignore[arg-type]
    try:
        yield s
    finally:
        s.close(timeout=2)


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
def test_delivery_framing_and_content(pki: TestPki, transport: str) -> None:
    chosen = [MESSAGES[k] for k in ("login", "login-failed", "deidentified", "reidentify")]
    with syslog_receiver(transport, ssl_context=_server_ctx(pki)) as rx, \
            sender(rx.port, transport, _client_ctx(pki) if transport == "tls" else None) as tx:
        exporter = AtnaExporter(SOURCE, tx)
        assert all(exporter.send(m) for m in chosen)
        frames = rx.wait(len(chosen))
        assert tx.flush(5)
    assert rx.errors == []
    assert [f.msg for f in frames] == [m.xml for m in chosen]  # in order, byte for byte
    assert [f.severity for f in frames] == [5, 4, 5, 5]
    for f in frames:
        assert (f.facility, f.version, f.app_name, f.msgid, f.structured_data, f.bom) == (
            10, 1, "deidgate", MSGID, "-", True)
        assert f.procid == str(os.getpid())
        assert f.hostname == tx.hostname
        assert f.timestamp.endswith("Z")
    assert tx.sent == len(chosen) and tx.dropped == 0


def test_everything_sent_carries_no_phi(pki: TestPki) -> None:
    with syslog_receiver("tls", ssl_context=_server_ctx(pki)) as rx, \
            sender(rx.port, "tls", _client_ctx(pki)) as tx:
        for m in MESSAGES.values():
            tx.submit(m.xml, severity=m.severity)
        frames = rx.wait(len(MESSAGES))
    for name, f in zip(MESSAGES, frames, strict=True):
        text = f.msg.decode()
        for what, value in PHI.items():
            if (name, what) != ("reidentify", "patient_id"):
                assert value not in text, (name, what)


def test_tls_refuses_an_untrusted_repository(pki: TestPki) -> None:
    with syslog_receiver("tls", ssl_context=_server_ctx(pki)) as rx:
        tx = SyslogSender("localhost", rx.port, "tls", ssl_context=_client_ctx(pki, pki.other_ca),
                          max_backoff_s=0.2)
        tx.submit(b"<AuditMessage/>")
        assert not tx.flush(1.5)  # still retrying: never sent in clear, never given up
        tx.close(timeout=0.5)
    assert rx.frames == []
    assert tx.sent == 0 and tx.dropped == 1  # counted when closed undelivered


def test_submit_never_blocks_and_a_full_queue_counts_drops() -> None:
    port = free_port()  # nothing listens: the sender thread is stuck in backoff
    reasons: list[str] = []
    with sender(port, "tcp", queue_size=2, max_backoff_s=5.0, on_drop=reasons.append) as tx:
        tx.submit(b"first")
        deadline = time.monotonic() + 5
        while tx._queue.qsize():  # the thread has taken it and is retrying it
            assert time.monotonic() < deadline
            time.sleep(0.01)
        started = time.monotonic()
        accepted = [tx.submit(f"m{i}".encode()) for i in range(5)]
        elapsed = time.monotonic() - started
    assert accepted == [True, True, False, False, False]
    assert reasons[:3] == ["queue-full"] * 3
    assert elapsed < 0.5  # five submits, no connect attempt among them


def test_reconnects_and_loses_nothing_while_the_repository_restarts(pki: TestPki) -> None:
    with syslog_receiver("tcp") as first:
        port = first.port
        tx = SyslogSender("127.0.0.1", port, "tcp", max_backoff_s=0.2)
        tx.submit(b"one")
        first.wait(1)
    try:
        for word in (b"two", b"three"):  # queued while nobody listens
            tx.submit(word)
        time.sleep(0.3)
        with syslog_receiver("tcp", port=port) as second:
            frames = second.wait(2)
            assert tx.flush(5)
        assert [f.msg for f in frames] == [b"two", b"three"]
        assert tx.dropped == 0
    finally:
        tx.close(timeout=1)


def test_udp_never_truncates() -> None:
    with syslog_receiver("udp") as rx, sender(rx.port, "udp") as tx:
        assert tx.submit(b"x" * 70_000) is False
        assert tx.submit(b"small") is True
        assert [f.msg for f in rx.wait(1)] == [b"small"]
    assert tx.dropped == 1


def test_frame_format() -> None:
    data = frame(b"<a/>", severity=4, hostname="gw 1.example", procid="12", at=None)
    assert data.startswith(b"<84>1 ")
    assert BOM + b"<a/>" in data
    f = parse(data)
    assert (f.hostname, f.procid, f.msg) == ("gw1.example", "12", b"<a/>")  # spaces removed
    assert octet_counted(b"abc") == b"3 abc"
    with pytest.raises(ValueError):
        frame(b"", severity=9, hostname="h", procid="1")


def test_receiver_rejects_malformed_frames() -> None:
    rx = Receiver("tcp")
    rx.add(b"not syslog")
    rx.add(b"<999>1 - - - - - -")
    assert len(rx.errors) == 2 and rx.frames == []


def test_exporter_from_settings(pki: TestPki, tmp_path: Path) -> None:
    assert AtnaExporter.from_settings(Settings(home=tmp_path)) is None
    ours = pki.leaf("DEIDGATE")
    with syslog_receiver("tls", ssl_context=_server_ctx(pki)) as rx:
        settings = Settings(home=tmp_path, audit_syslog_host="localhost",
                            audit_syslog_port=rx.port, audit_syslog_ca=pki.ca,
                            audit_syslog_cert=ours.cert, audit_syslog_key=ours.key,
                            audit_source_id="GW-7")
        drops: list[str] = []
        exporter = AtnaExporter.from_settings(settings, on_drop=drops.append)
        assert exporter is not None
        try:
            assert exporter.event("token.created", actor="admin",
                                  details={"name": "worker", "role": "service"})
            assert not exporter.event("job.submitted", actor="admin", details={})
            assert not exporter.event("deidentified", actor="x", details={})  # malformed
            [f] = rx.wait(1)
        finally:
            exporter.close()
    assert b'AuditSourceID="GW-7"' in f.msg
    assert exporter.unbuildable == 1
    assert drops == ["unbuildable"]  # what Metrics.audit_drop counts when passed as on_drop
