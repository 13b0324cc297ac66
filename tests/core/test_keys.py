"""Site key handling: generated with 0600, refused when short, default, low-entropy or exposed."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from service.core.errors import SiteKeyError
from service.core.keys import SiteKeys, hmac_sha256, load_or_create


def test_generated_key_is_0600_and_stable(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "site.key"
    first = SiteKeys.load(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    second = SiteKeys.load(path)
    assert first.pseudonym == second.pseudonym
    assert first.fingerprint == second.fingerprint
    # purpose-bound: no two derived keys are equal
    derived = {first.pseudonym, first.uid, first.date, first.encryption, first.lookup}
    assert len(derived) == 5


def test_repr_never_shows_key_material(tmp_path: Path) -> None:
    keys = SiteKeys.load(tmp_path / "k")
    text = repr(keys)
    for secret in (keys.pseudonym, keys.uid, keys.encryption):
        assert secret.hex() not in text


@pytest.mark.parametrize(
    "content",
    [b"", b"abcd", b"00" * 32, ("0" * 64).encode(), b"changeme"],
)
def test_bad_keys_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "site.key"
    path.write_bytes(content)
    os.chmod(path, 0o600)
    with pytest.raises(SiteKeyError):
        load_or_create(path)


def test_world_readable_key_refused(tmp_path: Path) -> None:
    path = tmp_path / "site.key"
    SiteKeys.load(path)
    os.chmod(path, 0o644)
    with pytest.raises(SiteKeyError, match="readable by others"):
        SiteKeys.load(path)


def test_missing_key_refused_when_not_creating(tmp_path: Path) -> None:
    with pytest.raises(SiteKeyError, match="does not exist"):
        SiteKeys.load(tmp_path / "absent.key", create=False)


def test_given_key_file_is_used(tmp_path: Path) -> None:
    path = tmp_path / "given.key"
    path.write_text(os.urandom(32).hex())
    os.chmod(path, 0o600)
    a = SiteKeys.load(path, create=False)
    b = SiteKeys.from_master(bytes.fromhex(path.read_text()))
    assert a.uid == b.uid


def test_hmac_parts_are_unambiguous() -> None:
    key = os.urandom(32)
    assert hmac_sha256(key, "ab", "c") != hmac_sha256(key, "a", "bc")
    assert hmac_sha256(key, "x") == hmac_sha256(key, "x")


def test_for_settings_creates_only_at_the_default_location(tmp_path: Path) -> None:
    from service.core.config import Settings

    absent = tmp_path / "elsewhere" / "site.key"
    with pytest.raises(SiteKeyError):
        SiteKeys.for_settings(Settings(home=tmp_path / "a", key_file=absent))
    assert not absent.exists()  # a configured key is never silently replaced by a fresh one
    default = Settings(home=tmp_path / "b")
    keys = SiteKeys.for_settings(default)
    assert default.site_key_path.exists()
    assert SiteKeys.for_settings(default).pseudonym == keys.pseudonym
