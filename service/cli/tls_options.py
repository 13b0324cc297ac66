"""The DICOM TLS options ``deidgate pacs`` and ``deidgate ae`` share (mode, pins, plain)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from service.dicom.admin import TlsSettings
from service.dicom.tls import certificate_fingerprint

TlsModeOption = Annotated[str, typer.Option("--tls", help="off | tls | mtls-required")]
PinSha256 = Annotated[str | None, typer.Option(
    "--pin-sha256", help="pin the node's certificate by SHA-256 (hex, colons allowed)")]
PinCert = Annotated[Path | None, typer.Option(
    "--pin-cert", help="pin the node's certificate: this PEM file's SHA-256")]
PinName = Annotated[str | None, typer.Option(
    "--pin-name", help="the certificate must name this CN/SAN (default for mtls: AE title)")]
AllowPlain = Annotated[bool, typer.Option(
    "--allow-plain", help="still accept plain DICOM from this node (incoming only)")]


def tls_settings(mode: str | None, pin_sha256: str | None, pin_cert: Path | None,
                 pin_name: str | None, allow_plain: bool) -> dict[str, Any]:
    """The ``tls_*`` keywords of ``service.dicom.admin`` (validated there)."""
    if pin_sha256 and pin_cert:
        typer.echo("error: give --pin-sha256 or --pin-cert, not both", err=True)
        raise typer.Exit(2)
    if pin_cert is not None:
        try:
            pin_sha256 = certificate_fingerprint(pin_cert)
        except ValueError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
    return {"tls_mode": mode or "off", "tls_pin_sha256": pin_sha256, "tls_pin_name": pin_name,
            "tls_allow_plain": allow_plain}


def describe_tls(row: TlsSettings | Any) -> str:
    """``tls=mtls-required pin=ab12cd34… name=PACS1 plain-allowed``: what an operator checks."""
    parts = [f"tls={row.tls_mode}"]
    if row.tls_pin_sha256:
        parts.append(f"pin={row.tls_pin_sha256[:16]}…")
    if row.tls_pin_name:
        parts.append(f"name={row.tls_pin_name}")
    if row.tls_allow_plain:
        parts.append("plain-allowed")
    return " ".join(parts)
