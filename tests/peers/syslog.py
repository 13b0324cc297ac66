"""A real syslog receiver on loopback (UDP, TCP or TLS) that parses what arrives as RFC 5424.

``with syslog_receiver("tls", ssl_context=ctx) as rx: ...; rx.wait(3)`` returns the parsed
frames; anything that is not a well-formed frame lands in ``rx.errors`` (tests assert it empty).
TCP and TLS expect RFC 6587 octet counting (``MSG-LEN SP SYSLOG-MSG``), as RFC 5425 requires.
"""

from __future__ import annotations

import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

BOM = b"\xef\xbb\xbf"
_HEADER = re.compile(
    rb"<(?P<pri>\d{1,3})>(?P<version>[1-9]\d{0,2}) (?P<ts>\S+) (?P<host>\S{1,255}) "
    rb"(?P<app>\S{1,48}) (?P<procid>\S{1,128}) (?P<msgid>\S{1,32}) "
    rb"(?P<sd>-|(?:\[[^\]]*\])+)(?: (?P<msg>.*))?\Z", re.DOTALL)
_TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?(Z|[+-]\d\d:\d\d)\Z")


@dataclass(frozen=True)
class Frame:
    facility: int
    severity: int
    version: int
    timestamp: str
    hostname: str
    app_name: str
    procid: str
    msgid: str
    structured_data: str
    msg: bytes  # after the BOM
    bom: bool


def parse(data: bytes) -> Frame:
    m = _HEADER.match(data)
    if m is None:
        raise ValueError("not an RFC 5424 frame")
    pri = int(m["pri"])
    if pri > 191:
        raise ValueError("PRI out of range")
    ts = m["ts"].decode("ascii")
    if ts != "-" and not _TS.match(ts):
        raise ValueError("bad TIMESTAMP")
    msg = m["msg"] or b""
    return Frame(pri // 8, pri % 8, int(m["version"]), ts, m["host"].decode("ascii"),
                 m["app"].decode("ascii"), m["procid"].decode("ascii"),
                 m["msgid"].decode("ascii"), m["sd"].decode("utf-8"),
                 msg.removeprefix(BOM), msg.startswith(BOM))


@dataclass
class Receiver:
    transport: str
    port: int = 0
    frames: list[Frame] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    connections: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, data: bytes) -> None:
        try:
            f = parse(data)
        except ValueError as exc:
            self.errors.append(str(exc))
            return
        with self._lock:
            self.frames.append(f)

    def wait(self, n: int, timeout: float = 15.0) -> list[Frame]:
        deadline = time.monotonic() + timeout
        while len(self.frames) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.frames)} of {n} syslog frames arrived")
            time.sleep(0.02)
        return list(self.frames)


def _read_octet_counted(conn: socket.socket, rx: Receiver) -> None:
    buf = b""
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            if buf:
                rx.errors.append("connection closed inside a frame")
            return
        buf += chunk
        while True:
            sp = buf.find(b" ")
            if sp < 0:
                break
            if not buf[:sp].isdigit() or buf[:1] == b"0":
                rx.errors.append("bad MSG-LEN")
                return
            n = int(buf[:sp])
            if len(buf) < sp + 1 + n:
                break
            rx.add(buf[sp + 1: sp + 1 + n])
            buf = buf[sp + 1 + n:]


@contextmanager
def syslog_receiver(transport: str, *, ssl_context: ssl.SSLContext | None = None,
                    port: int = 0) -> Iterator[Receiver]:
    rx = Receiver(transport)
    stop = threading.Event()
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    srv = socket.socket(socket.AF_INET, kind)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    rx.port = srv.getsockname()[1]
    srv.settimeout(0.1)
    conns: list[socket.socket] = []

    def serve_conn(conn: socket.socket) -> None:
        with suppress(OSError):
            if transport == "tls":
                assert ssl_context is not None
                conn = ssl_context.wrap_socket(conn, server_side=True)
            conn.settimeout(None)
            conns.append(conn)
            _read_octet_counted(conn, rx)

    def loop() -> None:
        if transport != "udp":
            srv.listen()
        while not stop.is_set():
            try:
                if transport == "udp":
                    rx.add(srv.recv(70_000))
                else:
                    conn, _ = srv.accept()
                    rx.connections += 1
                    threading.Thread(target=serve_conn, args=(conn,), daemon=True).start()
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield rx
    finally:
        stop.set()
        thread.join(5)
        srv.close()
        for c in conns:
            with suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            with suppress(OSError):
                c.close()
