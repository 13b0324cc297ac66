"""``deidgate backup create|restore``: the keys and the database in one archive.

The keys and the database are worth nothing apart: the mappings open only under their sealing
keys, pseudonyms stay stable only under the site key, and the audit chain verifies only under
it. So one archive holds both (mode 0600; keep it like the key itself, e.g. on the hospital's
encrypted backup store), with a manifest naming the key fingerprints and the schema heads.

Restore goes into a NEW data folder (refused when it is not empty) and, for PostgreSQL, a NEW
empty database; then ``deidgate audit verify`` must report the chain intact, and lookups open.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from service.cli.common import exit_for, fail, state
from service.core.errors import DeidgateError
from service.core.fsync import fsync_dir

backup_app = typer.Typer(help="Back up and restore the keys and the database.",
                         no_args_is_help=True)
FORMAT = 1


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o600
    tar.addfile(info, io.BytesIO(data))


@backup_app.command("create")
def create(ctx: typer.Context, out: Annotated[Path, typer.Argument(
        metavar="ARCHIVE", help="the .tar.gz to write (0600); must not exist")]) -> None:
    """Site key, sealing keys and a consistent database copy (SQLite online backup, or
    pg_dump) into one archive."""
    from service.core.keys import SiteKeys, seal_key_path, site_master
    from service.db import backup
    from service.db.migrate import current_heads

    st = state(ctx)
    if out.exists():
        fail(f"{out} exists; choose a new name")
    try:
        keys = SiteKeys.for_settings(st.settings, create=False)
        master = site_master(st.settings)
        url = st.db_url()
        with tempfile.TemporaryDirectory(prefix="deidgate-backup-") as tmp:
            db_file = backup.dump(url, Path(tmp))
            manifest: dict[str, Any] = {
                "format": FORMAT, "database": db_file,
                "site_fingerprint": keys.fingerprint,
                "seal_keys": {k: s.fingerprint for k, s in keys.seals.items()},
                "heads": sorted(current_heads(url)),
            }
            out.parent.mkdir(parents=True, exist_ok=True)
            part = out.with_name(f".{out.name}.part")
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                with tarfile.open(fileobj=fh, mode="w:gz") as tar:
                    _add_bytes(tar, "manifest.json", json.dumps(manifest, indent=2).encode())
                    _add_bytes(tar, "keys/site.key", master.hex().encode() + b"\n")
                    for key_id in keys.seals:
                        path = seal_key_path(st.settings.seal_keys_dir, key_id)
                        _add_bytes(tar, f"keys/{path.name}", path.read_bytes())
                    tar.add(Path(tmp) / db_file, arcname=f"db/{db_file}", recursive=False)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(part, out)
            fsync_dir(out.parent)
    except DeidgateError as exc:
        exit_for(exc)
    typer.echo(f"backup written to {out} (site key {keys.fingerprint}, "
               f"{len(keys.seals)} sealing key(s), database {db_file}); it holds the keys: "
               "store it like the key")


def _safe_members(tar: tarfile.TarFile) -> dict[str, tarfile.TarInfo]:
    members = {}
    for m in tar.getmembers():
        parts = Path(m.name).parts
        if not m.isfile() or m.name.startswith("/") or ".." in parts or len(parts) > 2:
            fail(f"unexpected entry in the archive: {m.name!r}")
        members[m.name] = m
    return members


@backup_app.command("restore")
def restore(
    archive: Annotated[Path, typer.Argument(metavar="ARCHIVE")],
    home: Annotated[Path, typer.Option(help="the NEW data folder (absent or empty)")],
    database_url: Annotated[str | None, typer.Option(
        help="a NEW empty PostgreSQL database (PostgreSQL archives); unset: SQLite in the "
             "new data folder")] = None,
) -> None:
    """Restore keys and database into a new data folder; then run `audit verify` there."""
    from service.core.keys import SiteKeys, load_seal_keys
    from service.db import backup

    home = home.expanduser().resolve()
    if home.exists() and any(home.iterdir()):
        fail(f"{home} is not empty; restore into a new data folder")
    url = database_url or f"sqlite:///{home / 'deidgate.db'}"
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = _safe_members(tar)
            if "manifest.json" not in members or "keys/site.key" not in members:
                fail("not a deidgate backup (no manifest or site key)")
            manifest = json.loads(_read(tar, members["manifest.json"]))
            if manifest.get("format") != FORMAT:
                fail(f"backup format {manifest.get('format')!r} is not {FORMAT}")
            keys_dir = home / "keys"
            keys_dir.mkdir(parents=True, mode=0o700)
            for name, m in members.items():
                if name.startswith("keys/"):
                    _write_0600(keys_dir / Path(name).name, _read(tar, m))
            keys = SiteKeys.load(keys_dir / "site.key", create=False)
            seals = {s.key_id: s.fingerprint for s in load_seal_keys(keys_dir)}
            if (keys.fingerprint != manifest["site_fingerprint"]
                    or seals != manifest["seal_keys"]):
                fail("the keys in the archive do not match its manifest")
            with tempfile.TemporaryDirectory(prefix="deidgate-restore-") as tmp:
                db_name = str(manifest["database"])
                src = Path(tmp) / Path(db_name).name
                src.write_bytes(_read(tar, members[f"db/{db_name}"]))
                backup.restore(src, url)
        fsync_dir(keys_dir)
    except DeidgateError as exc:
        exit_for(exc)
    env = f"DEIDGATE_HOME={home}" + (f" DEIDGATE_DATABASE_URL={database_url}"
                                     if database_url else "")
    typer.echo(f"restored into {home} (site key {keys.fingerprint}, {len(seals)} sealing "
               f"key(s)); check it: {env} deidgate audit verify")


def _read(tar: tarfile.TarFile, m: tarfile.TarInfo) -> bytes:
    fh = tar.extractfile(m)
    if fh is None:
        fail(f"unreadable entry {m.name!r}")
    return fh.read()


def _write_0600(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def register(app: typer.Typer) -> None:
    app.add_typer(backup_app, name="backup")
