"""The site secret key and the purpose-bound keys derived from it.

Every pseudonym, UID and date shift is an HMAC-SHA256 under a key derived from one site key, so
the same woman gets the same pseudonym across runs and machines that share the key, and nobody
without the key can recompute the mapping (unkeyed hashes of PatientID are trivially reversible
by enumerating IDs). The same site key also derives the AES-GCM key that encrypts original
identifiers in the audit database and the keyed lookup hash used to find them.

The key file is generated on first use with 0600 permissions, or given by path. A missing
(when a path was given), short, low-entropy or well-known key refuses to start.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import stat
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from service.core.errors import SiteKeyError
from service.core.fsync import fsync_dir

if TYPE_CHECKING:
    from service.core.config import Settings

KEY_BYTES = 32
_KNOWN_BAD = {
    b"\x00" * KEY_BYTES,
    b"changeme".ljust(KEY_BYTES, b"\x00"),
}


def _check(raw: bytes, origin: str) -> bytes:
    if len(raw) < KEY_BYTES:
        raise SiteKeyError(f"site key at {origin} is {len(raw)} bytes; at least {KEY_BYTES} needed")
    if raw in _KNOWN_BAD or len(set(raw)) < 8:
        raise SiteKeyError(f"site key at {origin} is a default or low-entropy value; generate one")
    return raw


# A key file created by another process but not written yet is empty for a moment (only where
# the link-based creation below is unavailable); a reader waits this long for its content.
_EMPTY_WAIT_S = 2.0


def read_key_file(path: Path) -> bytes:
    """Read a key file: hex text (64+ hex digits) or raw bytes.

    An empty file younger than a few seconds is another process's key still being written:
    wait for it rather than refuse it as too short."""
    deadline = time.monotonic() + _EMPTY_WAIT_S
    while True:
        try:
            data = path.read_bytes()
            young = time.time() - path.stat().st_mtime < 10 * _EMPTY_WAIT_S
        except FileNotFoundError:
            raise SiteKeyError(f"site key file {path} does not exist") from None
        if data or not young or time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    text = data.strip()
    try:
        raw = bytes.fromhex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raw = data
    return _check(raw, str(path))


def create_key_file(path: Path) -> bytes:
    """Generate a fresh key with 0600 permissions (never world-readable), race-free.

    Several processes of one machine (listener, API, workers) may start at once on a data folder
    that has no key yet; all of them must end up with the same key. The key is written and
    fsynced under a temporary name of its own (O_EXCL), then hard-linked to ``path``: the link
    appears with its full content or not at all, and fails for every process but the first, which
    then reads the winner's key. Where the filesystem has no hard links, the key is created in
    place with O_EXCL and readers wait for its content (``read_key_file``)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    raw = secrets.token_bytes(KEY_BYTES)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    _write_new(tmp, raw)
    try:
        os.link(tmp, path)
    except FileExistsError:  # another process won: its key is the site key
        return read_key_file(path)
    except OSError:  # no hard links here (some network filesystems)
        try:
            _write_new(path, raw)
        except FileExistsError:
            return read_key_file(path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)  # losing the key's name after a crash would lose every mapping
    return raw


def _write_new(path: Path, raw: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, raw.hex().encode("ascii") + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)  # whatever the umask


def load_or_create(path: Path, *, create: bool = True) -> bytes:
    if not path.exists():
        if not create:
            raise SiteKeyError(f"site key file {path} does not exist")
        return create_key_file(path)
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SiteKeyError(f"site key file {path} is readable by others; chmod 600 it")
    return read_key_file(path)


def _derive(master: bytes, purpose: str) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"deidgate/v1", info=purpose.encode()
    ).derive(master)


SITE_SEAL_ID = "site"
_SEAL_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
SEAL_PREFIX = "seal-"


@dataclass(frozen=True)
class SealKey:
    """A key that seals mapping rows (AES-GCM of the original, keyed lookup hash), by id.

    Rotation applies to these, never to the pseudonym/UID/date keys: a pseudonym is an HMAC of
    the original under the pseudonym key, so rotating that key would give an existing patient a
    new pseudonym and break linkage. What a leaked database plus an old sealing key can open is
    bounded by rotating and re-keying (``deidgate keys rotate|rekey``)."""

    key_id: str
    encryption: bytes = field(repr=False)
    lookup: bytes = field(repr=False)
    fingerprint: str = ""

    @classmethod
    def from_raw(cls, key_id: str, raw: bytes) -> SealKey:
        check_seal_id(key_id)
        _check(raw, f"(sealing key {key_id})")
        return cls(key_id, _derive(raw, "seal-encryption"), _derive(raw, "seal-lookup"),
                   hashlib.sha256(_derive(raw, "seal-fingerprint")).hexdigest()[:16])


def check_seal_id(key_id: str) -> str:
    if not _SEAL_ID.match(key_id):
        raise SiteKeyError(f"sealing key id {key_id!r} is not 1-32 of a-z, 0-9 and '-'")
    return key_id


def seal_key_path(keys_dir: Path, key_id: str) -> Path:
    return keys_dir / f"{SEAL_PREFIX}{check_seal_id(key_id)}.key"


def load_seal_keys(keys_dir: Path) -> tuple[SealKey, ...]:
    """Every ``seal-<id>.key`` in ``keys_dir`` (permissions checked like the site key)."""
    if not keys_dir.is_dir():
        return ()
    out = []
    for path in sorted(keys_dir.glob(f"{SEAL_PREFIX}*.key")):
        key_id = path.name[len(SEAL_PREFIX):-len(".key")]
        if key_id == SITE_SEAL_ID:
            raise SiteKeyError(f"{path}: the id {SITE_SEAL_ID!r} is the site key's own")
        out.append(SealKey.from_raw(key_id, load_or_create(path, create=False)))
    return tuple(out)


@dataclass(frozen=True)
class SiteKeys:
    """Purpose-bound keys; one derivation per purpose so no output doubles as another's key.

    ``seals``: the sealing keys of mapping rows by id; ``site`` (derived from the site key, the
    key every row had before rotation existed) is always there."""

    pseudonym: bytes = field(repr=False)
    uid: bytes = field(repr=False)
    date: bytes = field(repr=False)
    encryption: bytes = field(repr=False)
    lookup: bytes = field(repr=False)
    web: bytes = field(repr=False)  # web UI session cookies and CSRF tokens (service.web)
    fingerprint: str = ""
    # not hashed or compared: the pseudonym keys identify a SiteKeys (an engine cache key)
    seals: Mapping[str, SealKey] = field(default_factory=dict, repr=False, hash=False,
                                         compare=False)

    def seal(self, key_id: str) -> SealKey:
        """The sealing key ``key_id``; a clear error when this host does not hold it."""
        if key_id == SITE_SEAL_ID:
            return SealKey(SITE_SEAL_ID, self.encryption, self.lookup, self.fingerprint)
        try:
            return self.seals[key_id]
        except KeyError:
            raise SiteKeyError(
                f"sealing key {key_id!r} is not in this host's keys folder; copy "
                f"{SEAL_PREFIX}{key_id}.key there (0600) from the host that created it") from None

    def all_seals(self) -> list[SealKey]:
        return [self.seal(SITE_SEAL_ID), *self.seals.values()]

    def with_seals(self, seals: Iterable[SealKey]) -> SiteKeys:
        return replace(self, seals={s.key_id: s for s in seals})

    @classmethod
    def from_master(cls, master: bytes) -> SiteKeys:
        _check(master, "(given)")
        return cls(
            pseudonym=_derive(master, "pseudonym"),
            uid=_derive(master, "uid"),
            date=_derive(master, "date-shift"),
            encryption=_derive(master, "audit-encryption"),
            lookup=_derive(master, "audit-lookup"),
            web=_derive(master, "web-session"),
            fingerprint=hashlib.sha256(_derive(master, "fingerprint")).hexdigest()[:16],
        )

    @classmethod
    def load(cls, path: Path, *, create: bool = True) -> SiteKeys:
        return cls.from_master(load_or_create(path, create=create))

    @classmethod
    def for_settings(cls, settings: Settings, *, create: bool | None = None) -> SiteKeys:
        """The site keys and this host's sealing keys.

        The site key comes from the environment secret ``DEIDGATE_SITE_KEY`` (hex) when set,
        else from the key file, generated only at the default location: a key file named in the
        settings must exist, or a fresh key there would silently start a second pseudonym space.
        Every key file is refused when group or others may read it."""
        if settings.site_key is not None:
            site = cls.from_master(site_master(settings))
        else:
            site = cls.load(settings.site_key_path,
                            create=settings.key_file is None if create is None else create)
        return site.with_seals(load_seal_keys(settings.seal_keys_dir))

    def __repr__(self) -> str:
        return f"SiteKeys(fingerprint={self.fingerprint!r})"


def site_master(settings: Settings) -> bytes:
    """The site key itself (for ``deidgate backup``): the environment secret or the file."""
    if settings.site_key is not None:
        text = settings.site_key.get_secret_value().strip()
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raise SiteKeyError("DEIDGATE_SITE_KEY must be hex (64 or more digits)") from None
        return _check(raw, "DEIDGATE_SITE_KEY")
    return load_or_create(settings.site_key_path, create=False)


def hmac_sha256(key: bytes, *parts: str) -> bytes:
    """HMAC over unambiguous, length-prefixed parts (so ("ab","c") != ("a","bc"))."""
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for p in parts:
        b = p.encode("utf-8")
        mac.update(len(b).to_bytes(4, "big"))
        mac.update(b)
    return mac.digest()


NONCE_BYTES = 12


def aead_seal(key: bytes, plain: bytes, aad: bytes) -> bytes:
    """AES-256-GCM under a fresh random 96-bit nonce, stored in front: ``nonce || ct+tag``.

    ``aad`` binds the blob to where it is stored, so a blob copied elsewhere fails to open."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plain, aad)


def aead_open(key: bytes, blob: bytes, aad: bytes) -> bytes:
    """Inverse of ``aead_seal``; raises ``cryptography.exceptions.InvalidTag`` on any mismatch."""
    return AESGCM(key).decrypt(bytes(blob[:NONCE_BYTES]), bytes(blob[NONCE_BYTES:]), aad)
