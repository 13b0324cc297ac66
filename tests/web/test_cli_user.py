"""``deidgate user``: passwords from stdin (never an argument), audited, disable ends sessions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from sqlalchemy import select

from service.core.config import Settings
from service.db.models.audit import AuditEvent
from service.db.models.web import WebSession, WebUser
from service.db.session import session_scope
from service.web.accounts import check_credentials
from service.web.sessions import create_session

CLI = [sys.executable, "-m", "service.cli.main"]


def _run(home: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {"DEIDGATE_HOME": str(home), "PATH": "/usr/bin:/bin"}
    return subprocess.run([*CLI, "user", *args], input=stdin, env=env, capture_output=True,
                          text=True, timeout=120, cwd=Path(__file__).resolve().parents[2])


def test_user_create_passwd_disable_list(tmp_path: Path) -> None:
    home = tmp_path / "data"
    url = f"sqlite:///{home / 'deidgate.db'}"
    r = _run(home, "create", "alice", "--role", "auditor", "--password-stdin",
             stdin="first passphrase 1\n")
    assert r.returncode == 0, r.stderr
    r = _run(home, "create", "bob", "--role", "staff", "--password-stdin", stdin="short\n")
    assert r.returncode != 0 and "at least 12 characters" in r.stderr
    r = _run(home, "create", "carol", "--role", "staff")  # no terminal and no --password-stdin
    assert r.returncode != 0 and "--password-stdin" in r.stderr
    with session_scope(url) as s:
        assert check_credentials(s, "alice", "first passphrase 1")[0] is not None
        alice = s.scalar(select(WebUser).where(WebUser.name == "alice"))
        assert alice is not None
        create_session(s, Settings(home=home, database_url=url), client="t", user_id=alice.id)
    r = _run(home, "passwd", "alice", "--password-stdin", stdin="second passphrase 2\n")
    assert r.returncode == 0 and "signed out" in r.stdout
    with session_scope(url) as s:
        assert check_credentials(s, "alice", "first passphrase 1")[0] is None
        assert check_credentials(s, "alice", "second passphrase 2")[0] is not None
        assert all(x.revoked_at is not None for x in s.scalars(select(WebSession)))
    r = _run(home, "disable", "alice")
    assert r.returncode == 0
    r = _run(home, "list")
    assert r.returncode == 0 and "alice" in r.stdout and "disabled" in r.stdout
    assert "$argon2" not in r.stdout
    with session_scope(url) as s:
        assert check_credentials(s, "alice", "second passphrase 2") == (None, "account-disabled")
        events = [(e.kind, e.details) for e in s.scalars(select(AuditEvent)
                                                         .order_by(AuditEvent.seq))]
    kinds = [k for k, _ in events]
    assert kinds == ["user.created", "user.password-changed", "user.disabled"]
    assert json.loads(events[0][1]) == {"id": 1, "name": "alice", "role": "auditor"}
    assert not any("passphrase" in d for _, d in events)
