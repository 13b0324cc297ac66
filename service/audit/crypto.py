"""Encryption of original identifiers and the keyed hashes the audit tables store in clear.

- ``encrypt_original``: AES-256-GCM under ``SiteKeys.encryption`` with a random 96-bit nonce.
  The associated data binds the ciphertext to its row's (kind, pseudonym): copying a ciphertext
  onto another row (to make pseudonym A re-identify as B's person) fails authentication.
Both use the row's sealing key (``audit_mappings.key_id``, see ``SealKey``), which rotates;
the chain key stays the site key's.

- ``lookup_hash``: HMAC-SHA256 under ``SiteKeys.lookup`` of (namespace, original). It lets the
  store find "the pseudonym of this original" without decrypting every row, while a dump holder
  without the key cannot confirm a guessed PatientID (an unkeyed hash could be enumerated).
- ``chain_key``: the audit chain is an HMAC chain, not a bare SHA-256 one, so someone who can
  write the database but lacks the site key cannot rewrite events and recompute every hash after
  them (see service.audit.chain).
"""

from __future__ import annotations

from typing import Protocol

from cryptography.exceptions import InvalidTag

from service.core.errors import DeidgateError
from service.core.keys import SiteKeys, aead_open, aead_seal, hmac_sha256


class Sealing(Protocol):
    """What seals a mapping row: a ``SealKey`` (by key id) or, for the original rows, the site
    key's own derivations (``SiteKeys``, which is the ``site`` sealing key)."""

    @property
    def encryption(self) -> bytes: ...

    @property
    def lookup(self) -> bytes: ...

_AAD_LABEL = "deidgate/audit-mapping/v1"

# Kinds whose pseudonyms share one value space; a collision is checked per namespace.
NAMESPACES: dict[str, str] = {
    "patient": "patient",
    "study": "uid",
    "series": "uid",
    "instance": "uid",
    "uid": "uid",
    "accession": "accession",
}


class MappingIntegrityError(DeidgateError):
    """A stored ciphertext does not authenticate for its row (moved, edited or wrong key)."""

    code = "mapping-integrity"


def namespace_of(kind: str) -> str:
    try:
        return NAMESPACES[kind]
    except KeyError:
        raise ValueError(f"unknown mapping kind {kind!r}") from None


def _aad(kind: str, pseudonym: str) -> bytes:
    return hmac_sha256(b"aad", _AAD_LABEL, kind, pseudonym)


def encrypt_original(keys: Sealing, *, kind: str, pseudonym: str, original: str) -> bytes:
    return aead_seal(keys.encryption, original.encode("utf-8"), _aad(kind, pseudonym))


def decrypt_original(keys: Sealing, *, kind: str, pseudonym: str, blob: bytes) -> str:
    try:
        plain = aead_open(keys.encryption, blob, _aad(kind, pseudonym))
    except InvalidTag:
        raise MappingIntegrityError(
            f"the stored original of {kind} pseudonym {pseudonym} does not authenticate "
            "(row edited or moved, or a different site key)"
        ) from None
    return plain.decode("utf-8")


def lookup_hash(keys: Sealing, *, kind: str, original: str) -> str:
    return hmac_sha256(keys.lookup, "deidgate/lookup/v1", namespace_of(kind), original).hex()


def chain_key(keys: SiteKeys) -> bytes:
    return hmac_sha256(keys.lookup, "deidgate/audit-chain/v1")
