"""Associations to PACS nodes: per-node concurrency limit, timeouts, and failures named exactly.

Every failure is a ``PacsError`` whose ``code`` says what happened (refused, timed out, rejected
with the peer's reason, aborted, a failure status) and whether retrying can help; messages name
the node and codes, never patient data.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pynetdicom import AE

from service.core.errors import Retryable
from service.dicom import pynetdicom_patch
from service.dicom.admin import NodeConfig

log = logging.getLogger(__name__)
logging.getLogger("pynetdicom").setLevel(logging.WARNING)

PENDING = (0xFF00, 0xFF01)  # DIMSE "pending" statuses: more answers follow


class PacsError(Retryable):
    """A PACS conversation failed. ``permanent`` failures are not retried (a configuration
    problem such as our AE being unknown to the PACS); the base task decides what that means."""

    code = "pacs-error"

    def __init__(self, reason: str, *, code: str, permanent: bool = False) -> None:
        super().__init__(reason, code=code, permanent=permanent)


@dataclass(frozen=True)
class Timeouts:
    connect: float = 10.0  # TCP connect and A-ASSOCIATE answer
    dimse: float = 120.0  # longest wait for one DIMSE response (C-MOVE pending included)
    network: float = 120.0  # idle socket
    slot: float = 600.0  # longest wait for a free association slot on the node


_slots: dict[tuple[str, str, int, int], threading.BoundedSemaphore] = {}
_slots_lock = threading.Lock()


def _slot(node: NodeConfig) -> threading.BoundedSemaphore:
    """One semaphore per node per process: at most ``max_associations`` open at once (a changed
    limit takes effect for new associations; the old ones finish under the old count)."""
    key = (node.host, node.ae_title, node.port, node.max_associations)
    with _slots_lock:
        sem = _slots.get(key)
        if sem is None:
            sem = _slots[key] = threading.BoundedSemaphore(max(1, node.max_associations))
        return sem


def probe_tcp(host: str, port: int, timeout: float) -> str | None:
    """Why a TCP connection fails ('refused', 'timed-out', 'unreachable'), or None if it works."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except ConnectionRefusedError:
        return "refused"
    except TimeoutError:
        return "timed-out"
    except OSError:
        return "unreachable"


def _failure(node: NodeConfig, assoc: Any, timeouts: Timeouts) -> PacsError:
    if assoc.is_rejected:
        rj = assoc.acceptor.primitive
        result = getattr(rj, "result_str", "rejected")
        source = getattr(rj, "source_str", "")
        reason = getattr(rj, "reason_str", "")
        permanent = getattr(rj, "result", 1) == 1
        return PacsError(f"PACS node {node.name} rejected the association: {result}, "
                         f"{source}, {reason}", code="pacs-rejected", permanent=permanent)
    tcp = probe_tcp(node.host, node.port, timeouts.connect)
    if tcp == "refused":
        return PacsError(f"PACS node {node.name} refused the connection "
                         f"({node.host}:{node.port})", code="pacs-refused")
    if tcp in ("timed-out", "unreachable"):
        return PacsError(f"PACS node {node.name} at {node.host}:{node.port} is {tcp}",
                         code="pacs-unreachable")
    if assoc.is_aborted:
        return PacsError(f"PACS node {node.name} aborted the association", code="pacs-aborted")
    return PacsError(f"PACS node {node.name} did not answer the association request within "
                     f"{timeouts.connect:.0f} s", code="pacs-timed-out")


def silent_peer(assoc: Any, what: str, since: float) -> PacsError:
    """No response: pynetdicom aborts on its DIMSE timeout too, so time tells the two apart."""
    waited = time.monotonic() - since
    limit = float(getattr(assoc, "dimse_timeout", None) or 0)
    if limit and waited >= 0.9 * limit:
        return PacsError(f"{what}: no answer from the PACS within {limit:.0f} s",
                         code="pacs-timed-out")
    return PacsError(f"{what}: the PACS aborted the association", code="pacs-aborted")


def make_ae(local_ae: str, timeouts: Timeouts) -> AE:
    pynetdicom_patch.install()
    ae = AE(ae_title=local_ae)
    ae.acse_timeout = timeouts.connect
    ae.connection_timeout = timeouts.connect
    ae.dimse_timeout = timeouts.dimse
    ae.network_timeout = timeouts.network
    ae.maximum_pdu_size = 1_048_576
    return ae


@contextmanager
def association(node: NodeConfig, local_ae: str, contexts: Sequence[tuple[str, list[str] | None]],
                timeouts: Timeouts, *, ext_neg: list[Any] | None = None,
                evt_handlers: list[Any] | None = None) -> Iterator[Any]:
    """An established association (released afterwards) within the node's concurrency limit:
    this process's threads share a semaphore, and with ``node.leases`` every process on every
    host holds a lease in the database while its association lasts."""
    sem = _slot(node)
    started = time.monotonic()
    if not sem.acquire(timeout=timeouts.slot):
        raise PacsError(f"no free association slot for PACS node {node.name}", code="pacs-busy")
    try:
        if node.leases is None:
            yield from _associate(node, local_ae, contexts, timeouts, ext_neg, evt_handlers)
            return
        wait = max(0.0, timeouts.slot - (time.monotonic() - started))
        with node.leases.hold(node.peer, node.max_associations, wait_s=wait) as slot:
            if slot is None:
                raise PacsError(f"no free association slot for PACS node {node.name} "
                                "(held by other workers)", code="pacs-busy")
            yield from _associate(node, local_ae, contexts, timeouts, ext_neg, evt_handlers)
    finally:
        sem.release()


def _associate(node: NodeConfig, local_ae: str,
               contexts: Sequence[tuple[str, list[str] | None]], timeouts: Timeouts,
               ext_neg: list[Any] | None, evt_handlers: list[Any] | None) -> Iterator[Any]:
    """Open one association; the caller holds the slot."""
    ae = make_ae(local_ae, timeouts)
    for uid, syntaxes in contexts:
        if syntaxes:
            ae.add_requested_context(uid, syntaxes)
        else:
            ae.add_requested_context(uid)
    try:
        assoc = ae.associate(node.host, node.port, ae_title=node.ae_title, ext_neg=ext_neg,
                             evt_handlers=evt_handlers)
    except (OSError, UnicodeError) as exc:  # resolving the host name failed (gaierror, idna)
        raise PacsError(f"PACS node {node.name} at {node.host}:{node.port} is unreachable "
                        f"({type(exc).__name__})", code="pacs-unreachable") from None
    if not assoc.is_established:
        raise _failure(node, assoc, timeouts)
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()
        elif not assoc.is_aborted:
            assoc.abort()


@dataclass(frozen=True)
class EchoResult:
    ok: bool
    rtt_ms: float | None = None
    failure: str | None = None  # refused | timed-out | unreachable | rejected | aborted | status
    detail: str = ""


def echo(node: NodeConfig, local_ae: str, *, timeout: float = 10.0) -> EchoResult:
    """C-ECHO round trip (association, echo, release), or the exact reason it failed."""
    t = Timeouts(connect=timeout, dimse=timeout, network=timeout, slot=timeout)
    start = time.perf_counter()
    try:
        with association(node, local_ae, [("1.2.840.10008.1.1", None)], t) as assoc:
            status = assoc.send_c_echo()
            rtt = (time.perf_counter() - start) * 1000
            if status is None or "Status" not in status:
                err = (PacsError("aborted during C-ECHO", code="pacs-aborted")
                       if assoc.is_aborted else
                       PacsError(f"no C-ECHO answer within {timeout:.0f} s", code="pacs-timed-out"))
                raise err
            if int(status.Status) != 0:
                return EchoResult(False, rtt, "status",
                                  f"C-ECHO answered status 0x{int(status.Status):04X}")
    except PacsError as exc:
        kind = exc.code.removeprefix("pacs-")
        return EchoResult(False, None, kind, exc.reason)
    return EchoResult(True, rtt, None, "")
