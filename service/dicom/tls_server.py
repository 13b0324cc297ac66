"""The listener's TLS port: pynetdicom's threaded server with the handshake in the
connection's thread (a slow or silent client holds only its own thread, never the acceptor).

Apart from ``service.dicom.tls`` because it needs pynetdicom: the policy and certificate code
there is imported by the API and the CLI, which should not load the DICOM network stack.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
from typing import Any

from pynetdicom.transport import ThreadedAssociationServer

from service.core import logs
from service.core.tls import TlsConfigError
from service.dicom.tls import (
    TLS_RECORD_HANDSHAKE,
    OnRefused,
    PeerRefused,
    Refusal,
    TlsRefusal,
    classify,
)

log = logging.getLogger(__name__)


class TlsAssociationServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with the handshake moved into the connection's thread.

    Pass ``server_class=TlsAssociationServer`` and ``ssl_context=...`` to ``AE.make_server``,
    with ``on_refused`` (records a handshake refusal) and ``handshake_timeout`` as keywords.
    Combine with another server class by subclassing both (this one first)."""

    def __init__(self, *args: Any, on_refused: OnRefused | None = None,
                 handshake_timeout: float = 10.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.ssl_context is None:
            raise TlsConfigError("TlsAssociationServer needs an ssl_context")
        self.on_refused = on_refused
        self.handshake_timeout = handshake_timeout

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        sock: socket.socket = self.socket  # type: ignore[assignment]  # set by TCPServer
        client, address = sock.accept()
        return client, address  # no handshake here: see the class docstring

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        tls = self._handshake(request, str(client_address[0]))
        if tls is not None:
            super().process_request_thread(tls, client_address)

    def _handshake(self, raw: socket.socket, peer: str) -> ssl.SSLSocket | None:
        previous = raw.gettimeout()
        sock: socket.socket = raw
        try:
            raw.settimeout(self.handshake_timeout)
            first = raw.recv(1, socket.MSG_PEEK)
            if not first:  # a TCP probe (load balancer, scanner): no association was tried
                raw.close()
                return None
            if first[0] != TLS_RECORD_HANDSHAKE:
                raise PeerRefused(TlsRefusal.plain_on_tls_port)
            assert self.ssl_context is not None  # checked in __init__
            sock = self.ssl_context.wrap_socket(raw, server_side=True,
                                                do_handshake_on_connect=False)
            sock.do_handshake()
            sock.settimeout(previous)
            return sock  # type: ignore[return-value]  # wrap_socket returns an SSLSocket
        except (OSError, ValueError) as exc:
            reason = classify(exc)
            log.warning("TLS connection from %s refused: %s", peer, reason.value)
            if self.on_refused is not None:  # recorded before the peer sees the close
                try:
                    self.on_refused(Refusal(reason, peer))
                except Exception as exc:
                    log.error("could not record a refused TLS connection (%s)",
                              logs.failure(exc))
            self._close(sock)
            return None

    @staticmethod
    def _close(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
