"""Audit area: encrypted pseudonym mappings and the hash-chained audit log (see store.py)."""

from __future__ import annotations

from service.audit.chain import ChainReport, Finding
from service.audit.crypto import MappingIntegrityError
from service.audit.store import AuditStore, LookupRefused, PseudonymCollision
from service.audit.types import EventView, MappingInfo

__all__ = [
    "AuditStore",
    "ChainReport",
    "EventView",
    "Finding",
    "LookupRefused",
    "MappingInfo",
    "MappingIntegrityError",
    "PseudonymCollision",
]
