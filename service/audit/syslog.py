"""Syslog transport for ATNA messages: RFC 5424 frames over UDP, TCP (RFC 6587 octet counting)
or TLS (RFC 5425), sent by one background thread so no caller ever waits on the SIEM.

``submit`` puts the frame on a bounded queue and returns at once; a full queue drops the message
and counts it (``dropped``; ``on_drop`` lets the caller count it in Prometheus too). The sender
thread (re)connects with capped exponential backoff and retries the message in hand, so a
repository that is down for a while loses nothing until the queue is full. What was written to
a TCP/TLS socket just before it broke may be lost or sent twice: syslog has no acknowledgement.

Frame (IHE ITI-20 on RFC 5424): ``<85>1 TIMESTAMP HOSTNAME deidgate PROCID IHE+RFC-3881 - BOM
XML``. PRI 85 is facility 10 (security/authorisation) with severity 5 (notice); failures are
sent as 4 (warning). The MSG is UTF-8, so it starts with the BOM (RFC 5424 section 6.4).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import select
import socket
import ssl
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Literal

from service.core.config import Settings
from service.core.tls import client_context

log = logging.getLogger(__name__)

FACILITY = 10  # security/authorization messages
MSGID = "IHE+RFC-3881"
APP_NAME = "deidgate"
BOM = b"\xef\xbb\xbf"
UDP_MAX = 65_000  # one datagram; an XML message is never truncated, it is dropped
DEFAULT_PORTS = {"udp": 514, "tcp": 601, "tls": 6514}
Transport = Literal["udp", "tcp", "tls"]


def _printable(value: str, limit: int) -> str:
    """RFC 5424 header fields: 1..limit printable US-ASCII characters, or NILVALUE."""
    clean = "".join(c for c in value if 33 <= ord(c) <= 126)[:limit]
    return clean or "-"


def frame(msg: bytes, *, severity: int, hostname: str, procid: str,
          msgid: str = MSGID, app_name: str = APP_NAME, at: datetime | None = None) -> bytes:
    """One RFC 5424 SYSLOG-MSG with no structured data and a UTF-8 (BOM) MSG."""
    if not 0 <= severity <= 7:
        raise ValueError("syslog severity is 0..7")
    ts = (at or datetime.now(UTC)).isoformat(timespec="microseconds").replace("+00:00", "Z")
    header = (f"<{FACILITY * 8 + severity}>1 {ts} {_printable(hostname, 255)} "
              f"{_printable(app_name, 48)} {_printable(procid, 128)} {_printable(msgid, 32)} - ")
    return header.encode("ascii") + BOM + msg


def octet_counted(data: bytes) -> bytes:
    """RFC 6587 3.4.1 / RFC 5425 4.3: ``MSG-LEN SP SYSLOG-MSG``."""
    return str(len(data)).encode("ascii") + b" " + data


class SyslogSender:
    def __init__(self, host: str, port: int, transport: Transport = "tls", *,
                 ssl_context: ssl.SSLContext | None = None, queue_size: int = 10_000,
                 hostname: str | None = None, connect_timeout: float = 5.0,
                 max_backoff_s: float = 30.0,
                 on_drop: Callable[[str], None] | None = None) -> None:
        if transport == "tls" and ssl_context is None:
            raise ValueError("syslog over TLS needs an ssl_context")
        self.host, self.port, self.transport = host, port, transport
        self.ssl_context = ssl_context
        self.hostname = hostname or socket.getfqdn()
        self.procid = str(os.getpid())
        self.connect_timeout = connect_timeout
        self.max_backoff_s = max_backoff_s
        self.on_drop = on_drop
        self.sent = 0
        self.dropped = 0
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=queue_size)
        self._sock: socket.socket | None = None
        self._stop = threading.Event()
        self._idle = threading.Condition()
        self._busy = 0
        self._thread = threading.Thread(target=self._run, name="deidgate-syslog", daemon=True)
        self._thread.start()

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: object) -> SyslogSender | None:
        """None when no audit repository is configured."""
        if not settings.audit_syslog_host:
            return None
        transport = settings.audit_syslog_transport
        ctx = None
        if transport == "tls":
            ctx = client_context(settings.audit_syslog_ca, settings.audit_syslog_cert,
                                 settings.audit_syslog_key)
        port = settings.audit_syslog_port or DEFAULT_PORTS[transport]
        return cls(settings.audit_syslog_host, port, transport, ssl_context=ctx,
                   queue_size=settings.audit_syslog_queue, **kwargs)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"SyslogSender({self.transport}://{self.host}:{self.port})"

    # --- the caller's side: never blocks ---------------------------------------------------

    def submit(self, msg: bytes, *, severity: int = 5, msgid: str = MSGID) -> bool:
        """Queue one message; False (and counted) when it was dropped."""
        data = frame(msg, severity=severity, hostname=self.hostname, procid=self.procid,
                     msgid=msgid)
        if self.transport == "udp" and len(data) > UDP_MAX:
            return self._drop("oversize")
        if self._stop.is_set():
            return self._drop("closed")
        with self._idle:
            self._busy += 1
        try:
            self._queue.put_nowait(data)
        except queue.Full:
            self._done()
            return self._drop("queue-full")
        return True

    def _drop(self, why: str) -> bool:
        self.dropped += 1
        if self.on_drop is not None:
            self.on_drop(why)
        return False

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far was written; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._busy == 0, timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued (at most ``timeout`` s), then stop the thread."""
        self.flush(timeout)
        self._stop.set()
        with contextlib.suppress(queue.Full):  # a full queue: the thread sees _stop anyway
            self._queue.put_nowait(None)
        self._thread.join(timeout)
        self._disconnect()
        while True:  # what could not be sent in time is counted, not silently lost
            try:
                if self._queue.get_nowait() is not None:
                    self._drop("closed")
            except queue.Empty:
                break

    # --- the sender thread -----------------------------------------------------------------

    def _done(self) -> None:
        with self._idle:
            self._busy -= 1
            if self._busy == 0:
                self._idle.notify_all()

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            data = self._queue.get()
            if data is None:
                break
            delivered = False
            while not self._stop.is_set():
                try:
                    self._send(data)
                    self.sent += 1
                    delivered, backoff = True, 0.5
                    break
                except OSError as exc:
                    log.warning("audit repository %s:%d unreachable (%s); retrying in %.1f s",
                                self.host, self.port, type(exc).__name__, backoff)
                    self._disconnect()
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, self.max_backoff_s)
            if not delivered:
                self._drop("closed")
            self._done()

    def _connect(self) -> socket.socket:
        if self.transport == "udp":
            sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET,
                                 socket.SOCK_DGRAM)
            sock.connect((self.host, self.port))
            return sock
        sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        if self.transport == "tls":
            assert self.ssl_context is not None  # checked in __init__
            sock = self.ssl_context.wrap_socket(sock, server_hostname=self.host)
        sock.settimeout(self.connect_timeout)
        return sock

    def _send(self, data: bytes) -> None:
        if self._sock is not None and self.transport != "udp" and self._peer_closed(self._sock):
            self._disconnect()  # else the first write after the repository closed is lost
        if self._sock is None:
            self._sock = self._connect()
        if self.transport == "udp":
            self._sock.send(data)
        else:
            self._sock.sendall(octet_counted(data))

    @staticmethod
    def _peer_closed(sock: socket.socket) -> bool:
        """A syslog receiver never sends: a readable socket means it closed (FIN or TLS
        close_notify) or reset the connection."""
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable)

    def _disconnect(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
