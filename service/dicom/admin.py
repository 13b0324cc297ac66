"""Administration of the DICOM edge: plain functions over a Session.

The CLI uses them now and the REST API later; they return detached dataclasses (safe to hand to
another thread or serialise) and raise ``ConfigurationError`` subclasses with specific messages.
The database is the live configuration: settings (and an optional YAML/TOML file) only seed it on
first use, and the listener re-reads the allow-list per association (briefly cached), so changes
apply without a restart.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from service.core.config import Settings
from service.core.errors import ConfigurationError
from service.core.tls import TlsConfigError, normalise_fingerprint
from service.db.models.dicom import TLS_MODES, AllowedCaller, LocalAE, PacsNode
from service.dicom.leases import Leases
from service.dicom.tls import NodeTls, TlsMode

RetrieveMode = Literal["move", "get"]
_AE_RE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # printable, no backslash, max 16
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# a certificate name pin (CN or SAN): printable ASCII, no leading/trailing space, max 64
PIN_NAME_RE = re.compile(r"^[!-~]([ -~]{0,62}[!-~])?$")
TLS_FIELDS = ("tls_mode", "tls_pin_sha256", "tls_pin_name", "tls_allow_plain")


class InvalidSetting(ConfigurationError):
    code = "dicom-invalid-setting"


class UnknownNode(ConfigurationError):
    code = "pacs-node-unknown"


class DuplicateNode(ConfigurationError):
    code = "pacs-node-exists"


class UnknownCaller(ConfigurationError):
    code = "allowlist-unknown"


class PinConflict(ConfigurationError):
    """The certificate is pinned to another AE title already (a conflict, not a bad value)."""

    code = "tls-pin-conflict"


class _HasTls:
    tls_mode: str
    tls_pin_sha256: str | None
    tls_pin_name: str | None
    tls_allow_plain: bool

    @property
    def tls(self) -> NodeTls:
        """The policy the checks use (``service.dicom.tls``)."""
        return NodeTls(TlsMode(self.tls_mode), self.tls_pin_sha256, self.tls_pin_name,
                       self.tls_allow_plain)


@dataclass(frozen=True)
class TlsSettings(_HasTls):
    """A node's DICOM TLS columns (``service.db.models.dicom.TlsColumns``), flat so the API
    and CLI show them as they are stored."""

    tls_mode: str = "off"
    tls_pin_sha256: str | None = None
    tls_pin_name: str | None = None
    tls_allow_plain: bool = False


@dataclass(frozen=True)
class LocalAEConfig:
    ae_title: str
    host: str
    port: int
    max_pdu: int


@dataclass(frozen=True)
class NodeConfig(_HasTls):
    name: str
    ae_title: str
    host: str
    port: int
    retrieve: RetrieveMode = "move"
    max_associations: int = 2
    tls_mode: str = "off"  # the TLS columns: see TlsSettings
    tls_pin_sha256: str | None = None
    tls_pin_name: str | None = None
    tls_allow_plain: bool = False
    # where the association limit is counted across processes and hosts (service.dicom.leases);
    # None: per process only (a tool, an echo from the admin page)
    leases: Leases | None = field(default=None, repr=False, compare=False)

    @property
    def peer(self) -> str:
        """The PACS as its association limit knows it."""
        return f"{self.ae_title}@{self.host}:{self.port}"[:160]


@dataclass(frozen=True)
class AllowedAE(_HasTls):
    ae_title: str
    host: str | None = None
    tls_mode: str = "off"
    tls_pin_sha256: str | None = None
    tls_pin_name: str | None = None
    tls_allow_plain: bool = False


# --- validation ------------------------------------------------------------------------------

def check_ae_title(value: str) -> str:
    v = value.strip()
    if not _AE_RE.match(v) or not v.strip():
        raise InvalidSetting("AE title must be 1-16 printable characters without backslash")
    return v


def check_port(value: int) -> int:
    if not 1 <= int(value) <= 65535:
        raise InvalidSetting("port must be between 1 and 65535")
    return int(value)


def check_host(value: str) -> str:
    v = value.strip()
    if not v or len(v) > 255 or any(c.isspace() for c in v):
        raise InvalidSetting("host must be an address or a host name")
    return v


def _check_pin(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        raise InvalidSetting("an allow-list host must be an IP address") from None


def check_tls(tls_mode: str = "off", tls_pin_sha256: str | None = None,
              tls_pin_name: str | None = None, tls_allow_plain: bool = False) -> TlsSettings:
    """Validated TLS columns: a known mode, a SHA-256 pin (any of the usual spellings, stored
    lower-case hex), a printable name pin."""
    if tls_mode not in TLS_MODES:
        raise InvalidSetting(f"TLS mode must be one of {', '.join(TLS_MODES)}")
    pin = None
    if tls_pin_sha256 not in (None, ""):
        try:
            pin = normalise_fingerprint(str(tls_pin_sha256))
        except TlsConfigError as exc:
            raise InvalidSetting(exc.reason) from None
    name = None
    if tls_pin_name not in (None, ""):
        name = str(tls_pin_name).strip()
        if not PIN_NAME_RE.match(name):
            raise InvalidSetting("a certificate name pin must be 1-64 printable characters")
    return TlsSettings(tls_mode, pin, name, bool(tls_allow_plain))


def _apply_tls(row: PacsNode | AllowedCaller, tls: TlsSettings) -> None:
    row.tls_mode, row.tls_pin_sha256 = tls.tls_mode, tls.tls_pin_sha256
    row.tls_pin_name, row.tls_allow_plain = tls.tls_pin_name, tls.tls_allow_plain


def _tls_of(row: PacsNode | AllowedCaller) -> dict[str, Any]:
    return {"tls_mode": row.tls_mode, "tls_pin_sha256": row.tls_pin_sha256,
            "tls_pin_name": row.tls_pin_name, "tls_allow_plain": bool(row.tls_allow_plain)}


def tls_pins(session: Session) -> dict[str, str]:
    """Every pinned fingerprint and the AE title it is pinned to (nodes and allow-list)."""
    pins: dict[str, str] = {}
    for model in (PacsNode, AllowedCaller):
        for sha, ae in session.execute(select(model.tls_pin_sha256, model.ae_title)
                                       .where(model.tls_pin_sha256.is_not(None))):
            pins[str(sha)] = str(ae)
    return pins


def _check_pin_owner(session: Session, tls: TlsSettings, ae_title: str) -> None:
    """One certificate, one AE title: the listener refuses a pinned certificate under any
    other title, so pinning it to two titles would lock one of them out."""
    if tls.tls_pin_sha256 is None:
        return
    owner = tls_pins(session).get(tls.tls_pin_sha256)
    if owner is not None and owner != ae_title:
        raise PinConflict("that certificate is already pinned to another AE title")


def _check_max_pdu(value: int) -> int:
    if not 16_384 <= int(value) <= 1 << 30:
        raise InvalidSetting("max PDU must be between 16384 and 1073741824 bytes (0 unsupported)")
    return int(value)


# --- local AE ---------------------------------------------------------------------------------

def _local_row(session: Session, settings: Settings) -> LocalAE:
    row = session.get(LocalAE, 1)
    if row is None:
        row = LocalAE(id=1, ae_title=check_ae_title(settings.ae_title), host=settings.dicom_host,
                      port=check_port(settings.dicom_port), max_pdu=settings.max_pdu)
        session.add(row)
        session.flush()
    return row


def get_local_ae(session: Session, settings: Settings) -> LocalAEConfig:
    """The gateway's own AE; seeded from settings the first time."""
    r = _local_row(session, settings)
    return LocalAEConfig(r.ae_title, r.host, r.port, r.max_pdu)


def set_local_ae(session: Session, settings: Settings, *, ae_title: str | None = None,
                 host: str | None = None, port: int | None = None,
                 max_pdu: int | None = None) -> LocalAEConfig:
    r = _local_row(session, settings)
    if ae_title is not None:
        r.ae_title = check_ae_title(ae_title)
    if host is not None:
        r.host = check_host(host)
    if port is not None:
        r.port = check_port(port)
    if max_pdu is not None:
        r.max_pdu = _check_max_pdu(max_pdu)
    session.flush()
    return LocalAEConfig(r.ae_title, r.host, r.port, r.max_pdu)


# --- allow-list ------------------------------------------------------------------------------

def list_allowed(session: Session) -> list[AllowedAE]:
    rows = session.scalars(select(AllowedCaller).order_by(AllowedCaller.ae_title,
                                                          AllowedCaller.host))
    return [_allowed(r) for r in rows]


def _allowed(r: AllowedCaller) -> AllowedAE:
    return AllowedAE(ae_title=r.ae_title, host=r.host, **_tls_of(r))


def allow(session: Session, ae_title: str, host: str | None = None,
          **tls: Any) -> AllowedAE:
    """Allow a calling AE (optionally only from one address); idempotent. TLS columns given
    (``tls_mode`` ...) replace the entry's; none given keeps an existing entry's."""
    ae = check_ae_title(ae_title)
    pin = _check_pin(host) if host else None
    if set(tls) - set(TLS_FIELDS):
        raise InvalidSetting(f"unknown allow-list setting: {sorted(set(tls) - set(TLS_FIELDS))}")
    row = session.scalar(select(AllowedCaller).where(
        AllowedCaller.ae_title == ae,
        AllowedCaller.host.is_(None) if pin is None else AllowedCaller.host == pin))
    if row is None:
        row = AllowedCaller(ae_title=ae, host=pin)
        session.add(row)
        _apply_tls(row, check_tls())
    if tls:
        settings = check_tls(**tls)
        _check_pin_owner(session, settings, ae)
        _apply_tls(row, settings)
    session.flush()
    return _allowed(row)


def set_caller_tls(session: Session, ae_title: str, **tls: Any) -> list[AllowedAE]:
    """Set the TLS policy of every allow-list entry of a calling AE title (all its hosts)."""
    ae = check_ae_title(ae_title)
    settings = check_tls(**tls)
    rows = list(session.scalars(select(AllowedCaller).where(AllowedCaller.ae_title == ae)))
    if not rows:
        raise UnknownCaller("that calling AE title is not on the allow-list")
    _check_pin_owner(session, settings, ae)
    for row in rows:
        _apply_tls(row, settings)
    session.flush()
    return [_allowed(r) for r in rows]


def match_allowed(entries: list[AllowedAE], calling_ae: str,
                  peer_host: str) -> AllowedAE | None:
    """The allow-list entry an association matches: the one pinned to its host first."""
    ae = calling_ae.strip()
    found = [e for e in entries if e.ae_title == ae and (e.host is None or e.host == peer_host)]
    found.sort(key=lambda e: e.host is None)
    return found[0] if found else None


def incoming_tls(entry: AllowedAE | None, nodes: list[NodeConfig]) -> NodeTls:
    """The TLS policy for an association from a calling AE: its allow-list entry's, or, where
    that sets nothing, the policy of the PACS node with that AE title (the PACS that delivers
    our C-MOVEs calls with its own title), else plain DICOM."""
    if entry is not None and (entry.tls_mode != "off" or entry.tls_pin_sha256
                              or entry.tls_pin_name or entry.tls_allow_plain):
        return entry.tls
    if entry is not None:
        for n in nodes:
            if n.ae_title == entry.ae_title and n.tls_mode != "off":
                return n.tls
    return NodeTls()


def disallow(session: Session, ae_title: str) -> int:
    """Remove every entry for the AE title; returns how many were removed."""
    ae = check_ae_title(ae_title)
    res = session.execute(delete(AllowedCaller).where(AllowedCaller.ae_title == ae))
    return int(res.rowcount or 0)  # type: ignore[attr-defined]


def is_allowed(entries: list[AllowedAE], calling_ae: str, peer_host: str) -> bool:
    return match_allowed(entries, calling_ae, peer_host) is not None


# --- PACS nodes ------------------------------------------------------------------------------

def _node(r: PacsNode) -> NodeConfig:
    mode: RetrieveMode = "get" if r.retrieve == "get" else "move"
    return NodeConfig(name=r.name, ae_title=r.ae_title, host=r.host, port=r.port,
                      retrieve=mode, max_associations=r.max_associations, **_tls_of(r))


def add_node(session: Session, name: str, *, ae_title: str, host: str, port: int,
             retrieve: str = "move", max_associations: int = 2, tls_mode: str = "off",
             tls_pin_sha256: str | None = None, tls_pin_name: str | None = None,
             tls_allow_plain: bool = False) -> NodeConfig:
    if not _NAME_RE.match(name):
        raise InvalidSetting("node name: letters, digits, '_', '.', '-' (max 64)")
    if retrieve not in ("move", "get"):
        raise InvalidSetting("retrieve must be 'move' or 'get'")
    if not 1 <= max_associations <= 64:
        raise InvalidSetting("max associations must be between 1 and 64")
    if session.scalar(select(PacsNode).where(PacsNode.name == name)) is not None:
        raise DuplicateNode(f"a PACS node named {name!r} already exists")
    tls = check_tls(tls_mode, tls_pin_sha256, tls_pin_name, tls_allow_plain)
    row = PacsNode(name=name, ae_title=check_ae_title(ae_title), host=check_host(host),
                   port=check_port(port), retrieve=retrieve, max_associations=max_associations)
    _check_pin_owner(session, tls, row.ae_title)
    _apply_tls(row, tls)
    session.add(row)
    session.flush()
    return _node(row)


def set_node_tls(session: Session, name: str, **tls: Any) -> NodeConfig:
    """Replace a node's TLS policy (``tls_mode``, pins, ``tls_allow_plain``)."""
    row = session.scalar(select(PacsNode).where(PacsNode.name == name))
    if row is None:
        raise UnknownNode(f"no PACS node named {name!r}")
    settings = check_tls(**tls)
    _check_pin_owner(session, settings, row.ae_title)
    _apply_tls(row, settings)
    session.flush()
    return _node(row)


def list_nodes(session: Session) -> list[NodeConfig]:
    return [_node(r) for r in session.scalars(select(PacsNode).order_by(PacsNode.name))]


def get_node(session: Session, name: str) -> NodeConfig:
    row = session.scalar(select(PacsNode).where(PacsNode.name == name))
    if row is None:
        raise UnknownNode(f"no PACS node named {name!r}")
    return _node(row)


def remove_node(session: Session, name: str) -> None:
    res = session.execute(delete(PacsNode).where(PacsNode.name == name))
    if not res.rowcount:  # type: ignore[attr-defined]
        raise UnknownNode(f"no PACS node named {name!r}")


# --- seeding ---------------------------------------------------------------------------------

def load_config_file(path: Path) -> dict[str, Any]:
    """YAML or TOML: ``local_ae: {ae_title, host, port, max_pdu}``, ``allow: [{ae_title, host}]``,
    ``nodes: [{name, ae_title, host, port, retrieve, max_associations}]``; allow-list entries and
    nodes may add ``tls_mode``, ``tls_pin_sha256``, ``tls_pin_name``, ``tls_allow_plain``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
        data = tomllib.loads(text) if str(path).endswith(".toml") else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise InvalidSetting(f"cannot read DICOM config {path}: {type(exc).__name__}") from None
    if not isinstance(data, dict) or set(data) - {"local_ae", "allow", "nodes"}:
        raise InvalidSetting(f"{path}: expected keys local_ae, allow, nodes")
    return data


def seed(session: Session, settings: Settings, config: dict[str, Any] | None = None) -> bool:
    """First use only: local AE from settings (overridden by the file), allow-list and nodes
    from the file. Returns False when the database was already configured."""
    if session.get(LocalAE, 1) is not None:
        return False
    local = _local_row(session, settings)
    cfg = config or {}
    la = cfg.get("local_ae") or {}
    try:
        set_local_ae(session, settings, ae_title=la.get("ae_title"), host=la.get("host"),
                     port=la.get("port"), max_pdu=la.get("max_pdu"))
        if not session.scalar(select(func.count()).select_from(AllowedCaller)):
            for a in cfg.get("allow") or []:
                allow(session, a["ae_title"], a.get("host"),
                      **{k: a[k] for k in TLS_FIELDS if k in a})
        if not session.scalar(select(func.count()).select_from(PacsNode)):
            for n in cfg.get("nodes") or []:
                add_node(session, n["name"], ae_title=n["ae_title"], host=n["host"],
                         port=n["port"], retrieve=n.get("retrieve", "move"),
                         max_associations=n.get("max_associations", 2),
                         **{k: n[k] for k in TLS_FIELDS if k in n})
    except (KeyError, TypeError) as exc:
        raise InvalidSetting(f"DICOM config entry incomplete: {exc}") from None
    return local is not None


def seed_from_settings(session: Session, settings: Settings) -> bool:
    """``seed`` with the DICOM config file the settings name, if they name one."""
    cfg = load_config_file(settings.dicom_config_file) if settings.dicom_config_file else None
    return seed(session, settings, cfg)
