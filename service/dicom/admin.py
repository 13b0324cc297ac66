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
from service.db.models.dicom import AllowedCaller, LocalAE, PacsNode
from service.dicom.leases import Leases

RetrieveMode = Literal["move", "get"]
_AE_RE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # printable, no backslash, max 16
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class InvalidSetting(ConfigurationError):
    code = "dicom-invalid-setting"


class UnknownNode(ConfigurationError):
    code = "pacs-node-unknown"


class DuplicateNode(ConfigurationError):
    code = "pacs-node-exists"


@dataclass(frozen=True)
class LocalAEConfig:
    ae_title: str
    host: str
    port: int
    max_pdu: int


@dataclass(frozen=True)
class NodeConfig:
    name: str
    ae_title: str
    host: str
    port: int
    retrieve: RetrieveMode = "move"
    max_associations: int = 2
    # where the association limit is counted across processes and hosts (service.dicom.leases);
    # None: per process only (a tool, an echo from the admin page)
    leases: Leases | None = field(default=None, repr=False, compare=False)

    @property
    def peer(self) -> str:
        """The PACS as its association limit knows it."""
        return f"{self.ae_title}@{self.host}:{self.port}"[:160]


@dataclass(frozen=True)
class AllowedAE:
    ae_title: str
    host: str | None = None


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
    return [AllowedAE(r.ae_title, r.host) for r in rows]


def allow(session: Session, ae_title: str, host: str | None = None) -> AllowedAE:
    """Allow a calling AE (optionally only from one address); idempotent."""
    ae = check_ae_title(ae_title)
    pin = _check_pin(host) if host else None
    exists = session.scalar(select(AllowedCaller).where(
        AllowedCaller.ae_title == ae,
        AllowedCaller.host.is_(None) if pin is None else AllowedCaller.host == pin))
    if exists is None:
        session.add(AllowedCaller(ae_title=ae, host=pin))
        session.flush()
    return AllowedAE(ae, pin)


def disallow(session: Session, ae_title: str) -> int:
    """Remove every entry for the AE title; returns how many were removed."""
    ae = check_ae_title(ae_title)
    res = session.execute(delete(AllowedCaller).where(AllowedCaller.ae_title == ae))
    return int(res.rowcount or 0)  # type: ignore[attr-defined]


def is_allowed(entries: list[AllowedAE], calling_ae: str, peer_host: str) -> bool:
    ae = calling_ae.strip()
    return any(e.ae_title == ae and (e.host is None or e.host == peer_host) for e in entries)


# --- PACS nodes ------------------------------------------------------------------------------

def _node(r: PacsNode) -> NodeConfig:
    mode: RetrieveMode = "get" if r.retrieve == "get" else "move"
    return NodeConfig(r.name, r.ae_title, r.host, r.port, mode, r.max_associations)


def add_node(session: Session, name: str, *, ae_title: str, host: str, port: int,
             retrieve: str = "move", max_associations: int = 2) -> NodeConfig:
    if not _NAME_RE.match(name):
        raise InvalidSetting("node name: letters, digits, '_', '.', '-' (max 64)")
    if retrieve not in ("move", "get"):
        raise InvalidSetting("retrieve must be 'move' or 'get'")
    if not 1 <= max_associations <= 64:
        raise InvalidSetting("max associations must be between 1 and 64")
    if session.scalar(select(PacsNode).where(PacsNode.name == name)) is not None:
        raise DuplicateNode(f"a PACS node named {name!r} already exists")
    row = PacsNode(name=name, ae_title=check_ae_title(ae_title), host=check_host(host),
                   port=check_port(port), retrieve=retrieve, max_associations=max_associations)
    session.add(row)
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
    ``nodes: [{name, ae_title, host, port, retrieve, max_associations}]``."""
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
                allow(session, a["ae_title"], a.get("host"))
        if not session.scalar(select(func.count()).select_from(PacsNode)):
            for n in cfg.get("nodes") or []:
                add_node(session, n["name"], ae_title=n["ae_title"], host=n["host"],
                         port=n["port"], retrieve=n.get("retrieve", "move"),
                         max_associations=n.get("max_associations", 2))
    except (KeyError, TypeError) as exc:
        raise InvalidSetting(f"DICOM config entry incomplete: {exc}") from None
    return local is not None


def seed_from_settings(session: Session, settings: Settings) -> bool:
    """``seed`` with the DICOM config file the settings name, if they name one."""
    cfg = load_config_file(settings.dicom_config_file) if settings.dicom_config_file else None
    return seed(session, settings, cfg)
