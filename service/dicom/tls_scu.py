"""DICOM TLS for the SCU (retrieval, query, forwarding): one context per association, with the
node's pin checked inside the handshake, so a refused node never receives an A-ASSOCIATE-RQ.

pynetdicom reports a failed connection only as "not established"; ``ScuTls.refusal`` says why
(a ``TlsRefusal``), and ``raise_if_refused`` turns it into ``TlsRefused`` for the task's error
handling. Policies and refusal codes are ``service.dicom.tls``'s.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

from service.core.tls import TlsConfigError, client_context
from service.dicom.tls import (
    DicomTlsFiles,
    NodeTls,
    PeerCertificate,
    PeerRefused,
    TlsMode,
    TlsRefusal,
    TlsRefused,
    check_peer,
    classify,
)


class _CheckedSocket(ssl.SSLSocket):
    """Runs the node's pin check inside the handshake, so a refused node never receives an
    A-ASSOCIATE-RQ; the reason is left on the (per-association) context."""

    def do_handshake(self, block: bool = False) -> None:
        ctx: _ScuContext = self.context  # type: ignore[assignment]
        try:
            super().do_handshake(block)
            der = self.getpeercert(binary_form=True)
            cert = PeerCertificate.from_der(der) if der else None
            reason = check_peer(ctx.policy, ae_title=ctx.ae_title, tls=True, cert=cert)
            if reason is not None:
                raise PeerRefused(reason)
        except (OSError, ValueError) as exc:
            ctx.refusal = classify(exc)
            raise

    def read(self, nbytes: int = 1024, buffer: Any = None) -> Any:  # positional in ssl.py
        """Under TLS 1.3 our handshake ends before the server has checked our certificate;
        its refusal (an alert) arrives on the first read, and is classified there. ``recv``
        and ``recv_into`` (which service.dicom.fastio uses) both read through here."""
        try:
            return super().read(nbytes, buffer)
        except ssl.SSLError as exc:
            ctx: _ScuContext = self.context  # type: ignore[assignment]
            if ctx.refusal is None:
                ctx.refusal = classify(exc)
            raise


class _ScuContext(ssl.SSLContext):
    sslsocket_class = _CheckedSocket
    policy: NodeTls
    ae_title: str
    refusal: TlsRefusal | None


@dataclass
class ScuTls:
    """One association's TLS for the SCU: pass ``tls_args`` to ``AE.associate``; when the
    association is not established, ``raise_if_refused`` says why (``TlsRefused``)."""

    context: _ScuContext
    server_hostname: str
    node: str

    @property
    def tls_args(self) -> tuple[ssl.SSLContext, str]:
        return self.context, self.server_hostname

    @property
    def refusal(self) -> TlsRefusal | None:
        return self.context.refusal

    def raise_if_refused(self) -> None:
        if self.context.refusal is not None:
            raise TlsRefused(self.context.refusal, self.node)


def scu_tls(files: DicomTlsFiles | None, policy: NodeTls, *, node: str, ae_title: str,
            host: str) -> ScuTls | None:
    """TLS for one association to a node, or None when its policy is ``off``. The server must
    present a certificate valid for ``host`` under our CA bundle, and match the node's pins;
    with ``mtls-required`` we present our own certificate."""
    if policy.mode is TlsMode.off:
        return None
    if files is None:
        raise TlsConfigError(f"node {node} needs TLS but DICOM TLS is not configured")
    mutual = policy.mode is TlsMode.mtls
    ctx = client_context(files.ca, files.cert if mutual else None, files.key if mutual else None,
                         context_class=_ScuContext)
    assert isinstance(ctx, _ScuContext)
    ctx.policy, ctx.ae_title, ctx.refusal = policy, ae_title, None
    return ScuTls(ctx, host, node)
