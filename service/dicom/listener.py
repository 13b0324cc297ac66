"""The gateway's C-STORE / C-ECHO listener (pynetdicom SCP).

Who may associate is decided per association from the database allow-list (cached a few
seconds, so ``deidgate ae allow`` takes effect without a restart); anyone else gets
A-ASSOCIATE-RJ (rejected-permanent, service-user, calling-AE-title-not-recognised) and the
attempt is recorded. Every accepted C-STORE goes through ``StoreSink`` (spool, record, hook).

With DICOM TLS configured (``DEIDGATE_DICOM_TLS_*``) a second port speaks TLS 1.2+ only
(``service.dicom.tls``): the handshake runs in the connection's thread, and after the
allow-list each association passes its calling AE's TLS policy (certificate pinned to the AE
title, plain DICOM refused where the node requires TLS). Every refusal, in the handshake or
after the request, is recorded in ``dicom_association_attempts`` with its PHI-free code.
"""

from __future__ import annotations

import functools
import logging
import socket
import socketserver
import threading
import time
from dataclasses import dataclass
from typing import Any, Self

from pynetdicom import AE, evt
from pynetdicom.presentation import PresentationContext
from pynetdicom.transport import ThreadedAssociationServer

from service.audit import atna_events, atna_export
from service.core import logs, metrics
from service.core.config import Settings
from service.core.keys import SiteKeys
from service.db.models.dicom import AssociationAttempt
from service.db.session import get_sessionmaker, session_scope
from service.dicom import admin, pynetdicom_patch
from service.dicom.dataset_check import MAX_INFLATED_BYTES
from service.dicom.orphans import recover_orphans
from service.dicom.receive_stream import StreamWriter
from service.dicom.sopclasses import (
    STANDARD_STORAGE,
    STORAGE_SERVICE,
    TRANSFER_SYNTAXES,
    VERIFICATION,
    readable_syntax,
    storage_like,
)
from service.dicom.spool import Spool
from service.dicom.store_handler import OnStored, StoreSink
from service.dicom.tls import (
    DicomTlsFiles,
    Refusal,
    TlsGuard,
    listener_context,
)
from service.dicom.tls_server import TlsAssociationServer

log = logging.getLogger(__name__)
logging.getLogger("pynetdicom").setLevel(logging.WARNING)  # its debug output echoes identifiers

REJECTED_PERMANENT, SERVICE_USER, CALLING_AE_NOT_RECOGNIZED = 0x01, 0x01, 0x03


def _accept_as_offered(assoc: Any) -> None:
    """Accept every storage SOP class the sender proposes, in the transfer syntax it prefers,
    as ``storescp --promiscuous`` does. Per association, before negotiation.

    Why: a PACS moving a study sends every object of it; one class we did not negotiate made
    Orthanc fail the whole C-MOVE, so the study's mammograms never arrived. What the policy
    does not handle is refused by the workers with a reason and kept in quarantine, where an
    operator sees it. The sender's order wins (its own file's syntax: a PACS holding JPEG 2000
    need not decompress it for us); a syntax we do not list is accepted too when its data set
    encoding is Explicit VR Little Endian (every encapsulated one), which the header check
    reads. Private and unknown classes are mapped to the Storage Service here, in
    ``_storage_service_for_unknown``, so that their C-STORE reaches ``StoreSink``."""
    ours = [str(t) for t in TRANSFER_SYNTAXES]
    supported = {str(cx.abstract_syntax): cx for cx in assoc.acceptor.supported_contexts}
    offers: dict[str, list[str]] = {}  # a class may come in several contexts (one per syntax)
    for rq in assoc.requestor.primitive.presentation_context_definition_list:
        have = offers.setdefault(str(rq.abstract_syntax), [])
        have += [str(t) for t in rq.transfer_syntax if str(t) not in have]
    contexts: dict[str, PresentationContext] = {}
    for uid, offered in offers.items():
        known = supported.get(uid)
        if known is None and not storage_like(uid):
            continue  # a service we do not offer (Q/R, print, ...): rejected as before
        accepted = [t for t in offered if t in ours or readable_syntax(t)]
        cx = PresentationContext()
        cx.abstract_syntax = uid
        cx.transfer_syntax = [*accepted, *(t for t in ours if t not in accepted)]
        if known is not None:
            cx.scu_role, cx.scp_role = known.scu_role, known.scp_role
        contexts[uid] = cx
    assoc.acceptor.supported_contexts = [
        *contexts.values(), *(cx for uid, cx in supported.items() if uid not in contexts)]


def _storage_service_for_unknown(event: Any) -> dict[str, Any]:
    """EVT_SOP_COMMON: tell pynetdicom that each private or unknown SOP class proposed belongs
    to the Storage Service (1.2.840.10008.4.2); without this it has no service class to run
    their C-STORE on. Per association; the sender's own items are not needed for storage."""
    from pynetdicom.pdu_primitives import SOPClassCommonExtendedNegotiation

    out: dict[str, Any] = {}
    for rq in event.assoc.requestor.primitive.presentation_context_definition_list:
        uid = str(rq.abstract_syntax)
        if uid in STANDARD_STORAGE or not storage_like(uid):
            continue
        item = SOPClassCommonExtendedNegotiation()
        item.sop_class_uid = uid
        item.service_class_uid = STORAGE_SERVICE
        out[uid] = item
    return out


class AllowList:
    """The allow-list as the listener sees it, with the PACS nodes (their TLS policies) and
    every pinned certificate: re-read from the database every ``ttl`` s."""

    def __init__(self, db_url: str, ttl: float = 5.0) -> None:
        self.db_url = db_url
        self.ttl = ttl
        self._entries: list[admin.AllowedAE] = []
        self._nodes: list[admin.NodeConfig] = []
        self._pins: dict[str, str] = {}
        self._at = -1e9
        self._lock = threading.Lock()

    def _refresh(self) -> None:
        with self._lock:
            if time.monotonic() - self._at > self.ttl:
                with get_sessionmaker(self.db_url)() as s:
                    self._entries = admin.list_allowed(s)
                    self._nodes = admin.list_nodes(s)
                    self._pins = admin.tls_pins(s)
                self._at = time.monotonic()

    def entries(self) -> list[admin.AllowedAE]:
        self._refresh()
        return self._entries

    def guard(self, calling_ae: str, peer_host: str) -> TlsGuard | None:
        """None: the calling AE is not allowed from that host; else the TLS check for the
        association (its entry's policy, the pins). One look at the cache for both answers."""
        self._refresh()
        entry = admin.match_allowed(self._entries, calling_ae, peer_host)
        if entry is None:
            return None
        policy = admin.incoming_tls(entry, self._nodes)
        pins = self._pins
        return TlsGuard(lambda _ae: policy, lambda: pins)

    def invalidate(self) -> None:
        with self._lock:
            self._at = -1e9


@dataclass
class ListenerConfig:
    ae_title: str
    host: str = "0.0.0.0"  # noqa: S104 - the PACS must reach it
    port: int = 11112  # 0 = any free port (tests, benchmarks)
    max_pdu: int = 1_048_576
    max_associations: int = 16
    acse_timeout: float = 30.0
    dimse_timeout: float = 60.0
    network_timeout: float = 60.0  # idle time before a silent peer is dropped
    allow_cache_s: float = 5.0
    stream_writes: bool = True  # write to the spool as PDUs arrive (receive_stream)
    reuse_port: bool = False  # SO_REUSEPORT: processes share the port (listener_group)
    max_inflated_bytes: int = MAX_INFLATED_BYTES  # a deflated data set's cap (deflate bombs)
    plain: bool = True  # serve plain DICOM on ``port`` (False: the TLS port only)
    tls_port: int | None = None  # DICOM TLS on this port (0 = any free port); None: none
    tls: DicomTlsFiles | None = None  # our certificate, key and the CA bundle for peers
    tls_handshake_timeout: float = 10.0


class _ReusePortServer(ThreadedAssociationServer):
    """Sets SO_REUSEPORT before pynetdicom's bind, so the kernel spreads new connections over
    every process bound to the port (each association stays on the process that accepted it)."""

    def server_bind(self) -> None:
        sock: socket.socket = self.socket  # type: ignore[assignment]  # set by TCPServer
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


class _TlsReusePortServer(TlsAssociationServer, _ReusePortServer):
    """The TLS port of a listener group: handshake per thread, shared port."""


class Serving:
    """What both listener kinds (one process, or a group: ``service.dicom.listener_group``)
    offer: ``start()`` returns at once and serves in the background, ``stop()`` shuts down
    cleanly; a foreground loop and a context manager on top of those two."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self, wait: float = 2.0) -> None:
        raise NotImplementedError

    def serve_forever(self, stop: threading.Event) -> None:
        """Foreground use (``deidgate listen``): returns after ``stop`` is set."""
        self.start()
        try:
            while not stop.wait(0.5):
                pass
        finally:
            self.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Listener(Serving):
    """Serves on threads: no new associations after ``stop()``, running ones are aborted, and
    their partial data is never written."""

    def __init__(self, config: ListenerConfig, *, db_url: str, keys: SiteKeys, spool: Spool,
                 on_stored: OnStored | None = None) -> None:
        self.config = config
        self.db_url = db_url
        self.stream = StreamWriter(spool) if config.stream_writes else None
        self.sink = StoreSink(db_url=db_url, keys=keys, spool=spool, on_stored=on_stored,
                              stream=self.stream, max_inflated=config.max_inflated_bytes)
        self.allow_list = AllowList(db_url, ttl=config.allow_cache_s)
        if not config.plain and config.tls_port is None:
            raise admin.InvalidSetting("plain DICOM is off but no DICOM TLS port is set")
        if config.tls_port is not None and config.tls is None:
            raise admin.InvalidSetting("a DICOM TLS port needs DEIDGATE_DICOM_TLS_CERT and _KEY")
        self._servers: dict[str, ThreadedAssociationServer] = {}

    @classmethod
    def from_settings(cls, settings: Settings, *, db_url: str, keys: SiteKeys,
                      on_stored: OnStored | None = None, **overrides: Any) -> Listener:
        """Local AE from the database (seeded from settings and the config file on first use)."""
        conf, spool = config_from_settings(settings, db_url=db_url, **overrides)
        return cls(conf, db_url=db_url, keys=keys, spool=spool, on_stored=on_stored)

    # --- lifecycle ------------------------------------------------------------------------

    def _make_ae(self) -> AE:
        pynetdicom_patch.install()
        c = self.config
        ae = AE(ae_title=c.ae_title)
        ae.maximum_pdu_size = c.max_pdu
        ae.maximum_associations = c.max_associations
        ae.acse_timeout = c.acse_timeout
        ae.dimse_timeout = c.dimse_timeout
        ae.network_timeout = c.network_timeout
        ae.require_called_aet = False
        ae.add_supported_context(VERIFICATION)
        for uid in sorted(STANDARD_STORAGE):  # the rest is added per association as offered
            ae.add_supported_context(uid, TRANSFER_SYNTAXES)
        return ae

    def start(self, *, sweep: bool = True) -> Self:
        """``sweep=False`` for a process joining a running group: the ``.part`` files in the
        spool are then another process's arrivals, not a crash's leftovers."""
        if self._servers:
            return self
        if sweep:
            self.sink.spool.sweep_partials()
            recover_orphans(self.sink.spool, db_url=self.db_url, keys=self.sink.keys,
                            on_stored=self.sink.on_stored)  # a crash's files, before accepting
        ae = self._make_ae()
        handlers: list[Any] = [
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_SOP_COMMON, _storage_service_for_unknown),
            (evt.EVT_C_STORE, self.sink.handle_store),
            (evt.EVT_C_ECHO, lambda event: 0x0000),
            (evt.EVT_RELEASED, self.sink.association_ended),
            (evt.EVT_ABORTED, self.sink.association_ended),
            *(self.stream.handlers() if self.stream is not None else []),
        ]
        c = self.config
        servers: dict[str, ThreadedAssociationServer] = {}
        try:
            if c.plain:
                server_class = _ReusePortServer if c.reuse_port else ThreadedAssociationServer
                servers["plain"] = ae.make_server((c.host, c.port), evt_handlers=handlers,
                                                  server_class=server_class)
            if c.tls_port is not None and c.tls is not None:
                tls_class = _TlsReusePortServer if c.reuse_port else TlsAssociationServer
                servers["tls"] = ae.make_server(
                    (c.host, c.tls_port), evt_handlers=handlers, server_class=tls_class,
                    ssl_context=listener_context(c.tls), on_refused=self._record_refusal,
                    handshake_timeout=c.tls_handshake_timeout)
        except BaseException:
            for server in servers.values():
                server.server_close()
            raise
        for kind, server in servers.items():
            threading.Thread(target=server.serve_forever, name=f"deidgate-acceptor-{kind}",
                             daemon=True).start()
            ae._servers.append(server)  # as AE.start_server does
        self._servers = servers
        log.info("listener %s on %s: plain port %s, TLS port %s", c.ae_title, c.host,
                 self.port if c.plain else "off", self.tls_port)
        return self

    @property
    def port(self) -> int:
        """The plain DICOM port (the configured one until started)."""
        server = self._servers.get("plain")
        return self.config.port if server is None else int(server.server_address[1])

    @property
    def tls_port(self) -> int | None:
        server = self._servers.get("tls")
        return self.config.tls_port if server is None else int(server.server_address[1])

    def stop(self, wait: float = 2.0) -> None:
        """Stop accepting, abort running associations, close the socket. Waits at most
        ``wait`` s for handlers already running to finish their durable write; never longer
        (a handler blocked in a slow hook must not hold shutdown). An aborted sender is never
        told "stored", so it resends; a duplicate is answered idempotently."""
        servers, self._servers = list(self._servers.values()), {}
        if not servers:
            return
        for server in servers:
            socketserver.BaseServer.shutdown(server)  # no new associations
        running = [a for server in servers for a in server.active_associations]
        for assoc in running:
            assoc.abort()
        for server in servers:
            server.block_on_close = False  # socketserver would otherwise join every thread
            server.shutdown()  # closes the listening socket
        deadline = time.monotonic() + wait
        for assoc in running:
            assoc.join(max(0.0, deadline - time.monotonic()))

    # --- association control --------------------------------------------------------------

    def _on_requested(self, event: Any) -> None:
        assoc = event.assoc
        rq = assoc.requestor.primitive
        calling = str(rq.calling_ae_title).strip()
        called = str(rq.called_ae_title).strip()
        peer = str(assoc.requestor.address)
        # EVT_REQUESTED is a notification: pynetdicom logs a handler's exception and goes on to
        # accept, so the lookup and the TLS check both stay inside this fail-closed block
        try:
            guard = self.allow_list.guard(calling, peer)
            refusal = guard.check(assoc) if guard is not None else None
        except Exception as exc:  # database unreachable, a certificate that does not parse
            log.error("allow-list or TLS check unavailable; rejecting association (%s)",
                      logs.failure(exc))
            assoc.acse.send_reject(0x02, 0x01, 0x01)
            assoc.kill()
            return
        if guard is not None:
            if refusal is None:
                _accept_as_offered(assoc)
                return
            log.warning("rejecting association from AE %r at %s: %s", calling, peer,
                        refusal.reason.value)
            self._record_refusal(refusal)  # before the answer, as below
            guard.reject(assoc, refusal)
            return
        log.warning("rejecting association from AE %s at %s: calling AE not allowed", calling,
                    peer)
        # recorded before the answer, so the record exists once the peer knows
        self._record(calling, called, peer, "calling-ae-not-allowed")
        assoc.acse.send_reject(REJECTED_PERMANENT, SERVICE_USER, CALLING_AE_NOT_RECOGNIZED)
        assoc.kill()  # as pynetdicom does itself: lets the DUL send the RJ before closing

    def _record(self, calling: str, called: str, peer: str, reason: str) -> None:
        try:
            with session_scope(self.db_url) as s:
                s.add(AssociationAttempt(calling_ae=calling[:16], called_ae=called[:16],
                                         peer_host=peer[:255], reason=reason[:64]))
        except Exception as exc:
            log.error("could not record a rejected association (%s)", logs.failure(exc))
        # every refusal (allow-list or TLS) is counted and goes to the SIEM, PHI-free
        metrics.current().association_refused(reason[:64])
        atna_export.send(functools.partial(
            atna_events.association_refused, calling_ae=calling[:16], peer_host=peer,
            reason=reason[:64]))

    def _record_refusal(self, refusal: Refusal) -> None:
        """A TLS refusal: in the handshake (no AE titles known yet) or after the request."""
        self._record(refusal.calling_ae, refusal.called_ae, refusal.peer_host,
                     refusal.reason.value)


def config_from_settings(settings: Settings, *, db_url: str,
                         **overrides: Any) -> tuple[ListenerConfig, Spool]:
    """Local AE from the database (seeded on first use), with overrides, and the spool."""
    with session_scope(db_url) as s:
        admin.seed_from_settings(s, settings)
        local = admin.get_local_ae(s, settings)
    tls = DicomTlsFiles.from_settings(settings)
    conf = ListenerConfig(ae_title=local.ae_title, host=local.host, port=local.port,
                          max_pdu=local.max_pdu,
                          max_inflated_bytes=settings.dicom_max_inflated_mb << 20,
                          plain=settings.dicom_plain, tls_port=settings.dicom_tls_port,
                          tls=tls, tls_handshake_timeout=settings.dicom_tls_handshake_timeout_s)
    for k, v in overrides.items():
        setattr(conf, k, v)
    settings.spool_dir.mkdir(parents=True, exist_ok=True)
    return conf, Spool.for_settings(settings)
