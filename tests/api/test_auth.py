"""Tokens: 401 for missing / malformed / unknown / revoked tokens, stored only as a digest,
issued, listed and revoked by the ``deidgate token`` commands."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from typer.testing import CliRunner

from service.audit.store import AuditStore
from service.cli.main import app as cli
from service.core.config import Settings
from service.core.keys import SiteKeys
from service.core.security import Role, create_token, hash_token, revoke_token
from service.db.models.auth import ApiToken
from service.db.session import get_engine, session_scope
from tests.api.conftest import bearer

HTTPS = "https://testserver"  # plain HTTP is refused outside development

ME = "/api/v1/auth/me"


def _unauthorized(r, fragment: str) -> None:  # type: ignore[no-untyped-def]
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"] == "Bearer"
    body = r.json()
    assert body["error"]["code"] == "unauthorized"
    assert fragment in body["error"]["message"]


def test_missing_token(client: TestClient) -> None:
    _unauthorized(client.get(ME), "missing API token")


def test_other_scheme_is_a_missing_bearer_token(client: TestClient) -> None:
    _unauthorized(client.get(ME, headers={"Authorization": "Basic YWRtaW46YWRtaW4="}), "missing")


def test_malformed_token_is_not_echoed(client: TestClient) -> None:
    r = client.get(ME, headers=bearer("PatientID-12345678"))
    _unauthorized(r, "malformed API token")
    assert "12345678" not in r.text


def test_unknown_token(client: TestClient, tokens: dict[Role, str]) -> None:
    real = tokens[Role.admin]
    forged = real[:-4] + ("AAAA" if not real.endswith("AAAA") else "BBBB")
    r = client.get(ME, headers=bearer(forged))
    _unauthorized(r, "unknown API token")
    assert forged not in r.text


def test_revoked_token(client: TestClient, tokens: dict[Role, str], migrated_db: str) -> None:
    assert client.get(ME, headers=bearer(tokens[Role.staff])).status_code == 200
    with session_scope(migrated_db) as s:
        row = s.query(ApiToken).filter_by(name="test-staff").one()
        revoke_token(s, row.id)
    _unauthorized(client.get(ME, headers=bearer(tokens[Role.staff])), "revoked")
    # other tokens are unaffected
    assert client.get(ME, headers=bearer(tokens[Role.admin])).status_code == 200


def test_me_reports_name_role_and_prefix(client: TestClient, tokens: dict[Role, str]) -> None:
    for role, token in tokens.items():
        r = client.get(ME, headers=bearer(token))
        assert r.status_code == 200
        body = r.json()
        assert body == {"name": f"test-{role.value}", "role": role.value, "prefix": token[:12]}


def secret_of(token: str) -> str:
    """The secret part of ``dgt_<prefix>_<secret>``; the secret itself may contain '_'."""
    secret = token.split("_", 2)[2]
    assert len(secret) == 43
    return secret


def test_token_is_stored_only_as_its_digest(
    client: TestClient, tokens: dict[Role, str], migrated_db: str
) -> None:
    client.get(ME, headers=bearer(tokens[Role.admin]))  # also exercise last_used_at
    with get_engine(migrated_db).connect() as conn:
        rows = conn.execute(text("SELECT * FROM api_tokens")).all()
    dumped = " ".join(str(v) for row in rows for v in row)
    assert len(rows) == len(Role)
    for token in tokens.values():
        secret = secret_of(token)
        assert token not in dumped and secret not in dumped
        assert hash_token(token) in dumped
    if migrated_db.startswith("sqlite"):  # nor anywhere in the database file or its WAL
        path = migrated_db.removeprefix("sqlite:///")
        files = [Path(path), Path(path + "-wal")]
        raw = b"".join(f.read_bytes() for f in files if f.exists())
        for token in tokens.values():
            assert secret_of(token).encode() not in raw


def test_last_used_is_recorded(
    client: TestClient, tokens: dict[Role, str], migrated_db: str
) -> None:
    with session_scope(migrated_db) as s:
        assert s.query(ApiToken).filter_by(name="test-auditor").one().last_used_at is None
    client.get(ME, headers=bearer(tokens[Role.auditor]))
    with session_scope(migrated_db) as s:
        assert s.query(ApiToken).filter_by(name="test-auditor").one().last_used_at is not None


def test_token_names_are_never_reused(migrated_db: str) -> None:
    from service.core.security import TokenError

    with session_scope(migrated_db) as s:
        first = create_token(s, role=Role.staff, name="reader-1")
        revoke_token(s, first.id)
    with pytest.raises(TokenError, match="never reused"), session_scope(migrated_db) as s:
        create_token(s, role=Role.admin, name="reader-1")
    with pytest.raises(TokenError, match="token name"), session_scope(migrated_db) as s:
        create_token(s, role=Role.admin, name="has space")


def test_cli_create_list_revoke(settings: Settings, migrated_db: str) -> None:
    runner = CliRunner()
    env = {"DEIDGATE_HOME": str(settings.home), "DEIDGATE_DATABASE_URL": migrated_db}
    res = runner.invoke(cli, ["token", "create", "--role", "service", "--name", "etl"], env=env)
    assert res.exit_code == 0, res.output
    token = res.stdout.strip()
    assert token.startswith("dgt_") and len(token.splitlines()) == 1
    assert "shown only this once" in res.stderr

    listed = runner.invoke(cli, ["token", "list"], env=env)
    assert listed.exit_code == 0
    assert "etl" in listed.stdout and "service" in listed.stdout and token[:12] in listed.stdout
    assert secret_of(token) not in listed.stdout

    from service.api.app import create_app

    with TestClient(create_app(settings), base_url=HTTPS) as client:
        assert client.get(ME, headers=bearer(token)).json()["role"] == "service"
        with session_scope(migrated_db) as s:
            tid = s.query(ApiToken).filter_by(name="etl").one().id
        res = runner.invoke(cli, ["token", "revoke", str(tid)], env=env)
        assert res.exit_code == 0, res.output
        assert client.get(ME, headers=bearer(token)).status_code == 401
    listed = runner.invoke(cli, ["token", "list"], env=env)
    assert "revoked" in listed.stdout

    with session_scope(migrated_db) as s:
        events = AuditStore(s, SiteKeys.load(settings.site_key_path)).events()
    assert [(e.kind, e.details["name"]) for e in events] == [
        ("token.created", "etl"), ("token.revoked", "etl")
    ]
    assert all(e.actor.startswith("cli") for e in events)
    assert secret_of(token) not in str([e.details for e in events])

    bad = runner.invoke(cli, ["token", "revoke", "424242"], env=env)
    assert bad.exit_code == 1 and "no token with id 424242" in bad.stderr
    bad = runner.invoke(cli, ["token", "create", "--role", "root"], env=env)
    assert bad.exit_code != 0


def test_no_token_exists_until_one_is_created(migrated_db: str) -> None:
    with session_scope(migrated_db) as s:
        assert s.query(ApiToken).count() == 0
