"""Sealing-key rotation on SQLite and PostgreSQL: linkage kept, old rows readable, re-keying,
the trigger still guarding what a row means, key files checked, the key from the environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from service.audit import AuditStore, PseudonymCollision, keyring
from service.core.config import Settings
from service.core.errors import SiteKeyError
from service.core.keys import SiteKeys
from service.db.models.audit import AuditMapping
from service.db.session import session_scope
from tests.audit.util import originals, outcome, pseudonyms
from workers.deid.pseudonym import Pseudonymizer


def _record(url: str, keys: SiteKeys, *ns: int) -> None:
    for n in ns:
        with session_scope(url) as s:
            AuditStore(s, keys).record_outcome(outcome(n), source="cli", job_id="job-1")


def _key_ids(url: str) -> dict[str, str]:
    with session_scope(url) as s:
        return {p: k for p, k in s.execute(select(AuditMapping.pseudonym, AuditMapping.key_id))}


def _rotate(url: str, keys: SiteKeys, folder: Path) -> tuple[SiteKeys, str]:
    with session_scope(url) as s:
        keys, seal = keyring.create(s, keys, folder, actor="test")
        keyring.activate(s, keys, seal.key_id, actor="test")
    return keys, seal.key_id


def test_rotation_keeps_linkage_and_old_rows(migrated_db: str, site_keys: SiteKeys,
                                             home: Path) -> None:
    _record(migrated_db, site_keys, 1, 2)
    assert set(_key_ids(migrated_db).values()) == {"site"}  # existing rows: the site key's id
    before = Pseudonymizer(site_keys, "default").patient_id(originals(1)["patient"])

    _, new_id = _rotate(migrated_db, site_keys, home / "keys")
    assert (home / "keys" / f"seal-{new_id}.key").stat().st_mode & 0o777 == 0o600
    # the pseudonym keys do not rotate: the same patient keeps her pseudonym
    reloaded = SiteKeys.for_settings(Settings(home=home, database_url=migrated_db))
    assert new_id in reloaded.seals
    assert Pseudonymizer(reloaded, "default").patient_id(originals(1)["patient"]) == before

    _record(migrated_db, reloaded, 1, 3)  # patient 1 again (no new rows), patient 3 new
    ids = _key_ids(migrated_db)
    assert ids[pseudonyms(1)["patient"]] == "site" and ids[pseudonyms(3)["patient"]] == new_id
    with session_scope(migrated_db) as s:
        store = AuditStore(s, reloaded)
        for n in (1, 2, 3):  # old rows open under the old key, new ones under the new key
            assert dict(store.lookup(pseudonyms(n)["patient"], reason="t-1", actor="a")) == {
                "patient": originals(n)["patient"]}
            assert store.find_pseudonyms("patient", originals(n)["patient"], reason="t-2",
                                         actor="a") == [pseudonyms(n)["patient"]]
        assert dict(store.export_mapping("accession")) == {
            originals(n)["accession"]: pseudonyms(n)["accession"] for n in (1, 2, 3)}
    # a collision against a row sealed under the old key is still caught
    bad = outcome(9, override={"patient": ("SOMEONE-ELSE", pseudonyms(2)["patient"])})
    with session_scope(migrated_db) as s, pytest.raises(PseudonymCollision):
        AuditStore(s, reloaded).record_outcome(bad, source="cli", job_id=None)


def test_rekey_reseals_everything_and_old_key_can_go(migrated_db: str, site_keys: SiteKeys,
                                                     home: Path) -> None:
    _record(migrated_db, site_keys, 1, 2, 3)
    keys, first = _rotate(migrated_db, site_keys, home / "keys")
    _record(migrated_db, keys, 4)
    keys, second = _rotate(migrated_db, keys, home / "keys")
    with session_scope(migrated_db) as s:
        assert keyring.rekey(s, keys, actor="test", batch=4) == 20
    assert set(_key_ids(migrated_db).values()) == {second}
    with session_scope(migrated_db) as s:
        info = {k.key_id: k for k in keyring.list_keys(s, keys)}
        assert info[second].active and info[second].rows == 20
        assert info[first].rows == 0 and info["site"].rows == 0
        assert keyring.rekey(s, keys, actor="test") == 0  # nothing left: idempotent
    # the first sealing key's file destroyed: every row still opens
    (home / "keys" / f"seal-{first}.key").unlink()
    keys = SiteKeys.for_settings(Settings(home=home, database_url=migrated_db))
    assert first not in keys.seals
    with session_scope(migrated_db) as s:
        store = AuditStore(s, keys)
        for n in (1, 4):
            assert dict(store.lookup(pseudonyms(n)["study"], reason="t", actor="a")) == {
                "study": originals(n)["study"]}
        assert store.verify_chain().ok
        kinds = [e.kind for e in store.events()]
        assert kinds.count("keys.activated") == 2 and "keys.rekeyed" in kinds


def test_only_sealing_columns_may_be_updated(migrated_db: str, site_keys: SiteKeys) -> None:
    _record(migrated_db, site_keys, 1)
    engine = create_engine(migrated_db)
    try:
        for column in ("pseudonym", "kind", "patient_pseudonym", "source"):
            with pytest.raises((DBAPIError, IntegrityError)), engine.begin() as c:
                c.execute(text(f"UPDATE audit_mappings SET {column} = 'x'"))  # noqa: S608
        with engine.begin() as c:  # what re-keying writes is allowed (and then fails to open)
            c.execute(text("UPDATE audit_mappings SET key_id = key_id"))
    finally:
        engine.dispose()


def test_a_host_without_the_active_key_refuses_to_seal(migrated_db: str, site_keys: SiteKeys,
                                                       home: Path, tmp_path: Path) -> None:
    _rotate(migrated_db, site_keys, tmp_path / "elsewhere")  # the file is not in HOME/keys
    here = SiteKeys.for_settings(Settings(home=home, database_url=migrated_db))
    with session_scope(migrated_db) as s, pytest.raises(SiteKeyError, match="not in this host"):
        AuditStore(s, here).record_outcome(outcome(1), source="cli", job_id=None)


def test_a_different_key_under_a_known_id_is_refused(migrated_db: str, site_keys: SiteKeys,
                                                     home: Path, tmp_path: Path) -> None:
    _, key_id = _rotate(migrated_db, site_keys, home / "keys")
    path = home / "keys" / f"seal-{key_id}.key"
    path.unlink()
    path.write_text(os.urandom(32).hex())
    path.chmod(0o600)
    other = SiteKeys.for_settings(Settings(home=home, database_url=migrated_db))
    with session_scope(migrated_db) as s, pytest.raises(SiteKeyError, match="fingerprint"):
        AuditStore(s, other).record_outcome(outcome(1), source="cli", job_id=None)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_readable_key_files_are_refused(home: Path, site_keys: SiteKeys, mode: int) -> None:
    settings = Settings(home=home)
    seal = home / "keys" / "seal-k1.key"
    seal.write_text(os.urandom(32).hex())
    seal.chmod(mode)
    with pytest.raises(SiteKeyError, match="readable by others; chmod 600"):
        SiteKeys.for_settings(settings)
    seal.chmod(0o600)
    (home / "keys" / "site.key").chmod(mode)
    with pytest.raises(SiteKeyError, match="readable by others; chmod 600"):
        SiteKeys.for_settings(settings)


def test_site_key_from_an_environment_secret(tmp_path: Path) -> None:
    secret = os.urandom(32).hex()
    env = {**os.environ, "DEIDGATE_SITE_KEY": secret, "DEIDGATE_HOME": str(tmp_path / "h")}
    code = ("from service.core.config import load_settings; from service.core.keys import "
            "SiteKeys; print(SiteKeys.for_settings(load_settings()).fingerprint)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == SiteKeys.from_master(bytes.fromhex(secret)).fingerprint
    assert not (tmp_path / "h" / "keys" / "site.key").exists()  # no file was generated
    assert secret not in repr(Settings(site_key=secret))  # type: ignore[arg-type]
    env["DEIDGATE_SITE_KEY"] = "00" * 32
    bad = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "low-entropy" in bad.stderr


def test_cli_rotate_list_rekey(tmp_path: Path) -> None:
    env = {**os.environ, "DEIDGATE_HOME": str(tmp_path / "h"), "PYTHONPATH": os.getcwd()}
    env.pop("DEIDGATE_DATABASE_URL", None)

    def cli(*args: str) -> str:
        r = subprocess.run([sys.executable, "-m", "service.cli.main", *args], env=env,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        return r.stdout

    url = f"sqlite:///{tmp_path / 'h' / 'deidgate.db'}"
    assert "site" in cli("keys", "list")
    keys = SiteKeys.load(tmp_path / "h" / "keys" / "site.key", create=False)
    _record(url, keys, 1, 2)
    out = cli("keys", "rotate", "--no-activate", "--id", "k2")
    assert "keys activate k2" in out
    cli("keys", "activate", "k2")
    assert "re-sealed 10" in cli("keys", "rekey")
    listing = cli("keys", "list").splitlines()
    k2 = next(line for line in listing if line.startswith("k2"))
    assert "yes" in k2 and " 10 " in f"{k2} "


@pytest.mark.parametrize("command", [["serve", "--no-listener", "--no-worker"],
                                     ["listen", "--no-queue"], ["worker", "-Q", "deid"]])
def test_processes_refuse_to_start_with_a_readable_key(tmp_path: Path,
                                                       command: list[str]) -> None:
    home = tmp_path / "h"
    key = home / "keys" / "site.key"
    SiteKeys.load(key)  # created 0600
    key.chmod(0o644)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEIDGATE_")}
    env.update(DEIDGATE_HOME=str(home), PYTHONPATH=os.getcwd())
    r = subprocess.run([sys.executable, "-m", "service.cli.main", *command], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "readable by others; chmod 600 it" in r.stderr
