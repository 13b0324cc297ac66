"""Sessions end when they should: sign-out, idle and absolute expiry, a disabled account, a
revoked token, a forged cookie. Failed sign-ins are rate-limited and audited without what was
typed. Passwords are argon2id and rehashed when the parameters change."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta

from argon2 import PasswordHasher, Type
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from service.core.config import Settings
from service.core.keys import SiteKeys
from service.core.security import Role, create_token, revoke_token
from service.db.base import utcnow
from service.db.models.audit import AuditEvent
from service.db.models.web import WebSession, WebUser
from service.db.session import session_scope
from service.web import accounts
from service.web.accounts import HASHER, check_credentials, create_user, disable_user
from tests.web.conftest import BASE, ORIGIN, PASSWORDS, form_csrf

SignedIn = Callable[[Role], tuple[TestClient, str]]


def _post_login(c: TestClient, **data: str) -> object:
    page = c.get("/login")
    return c.post("/login", headers=ORIGIN, data={"csrf_token": form_csrf(page.text), **data})


def _refused(c: TestClient) -> bool:
    r = c.get("/admin")
    return r.status_code == 303 and r.headers["location"] == "/login"


def _age(settings: Settings, **values: object) -> None:
    with session_scope(settings.db_url) as s:
        s.execute(update(WebSession).values(**values))


def test_sign_out_revokes_the_session_server_side(signed_in: SignedIn,
                                                   settings: Settings) -> None:
    c, token = signed_in(Role.admin)
    cookie = dict(c.cookies)
    assert c.get("/admin").status_code == 200
    assert c.post("/logout", headers=ORIGIN, data={"csrf_token": token}).status_code == 303
    replay = TestClient(c.app, base_url=BASE, follow_redirects=False, cookies=cookie)
    assert _refused(replay)  # the old cookie, replayed, opens nothing
    with session_scope(settings.db_url) as s:
        row = s.scalar(select(WebSession))
        assert row is not None and row.revoked_why == "signed out"


def test_idle_and_absolute_expiry(signed_in: SignedIn, settings: Settings) -> None:
    c, _ = signed_in(Role.admin)
    _age(settings, last_seen_at=utcnow() - timedelta(
        minutes=settings.web_session_idle_minutes, seconds=1))
    assert _refused(c)
    c, _ = signed_in(Role.admin)
    with session_scope(settings.db_url) as s:
        s.execute(update(WebSession).where(WebSession.revoked_at.is_(None))
                  .values(expires_at=utcnow() - timedelta(seconds=1)))
    assert _refused(c)
    c, _ = signed_in(Role.admin)
    assert c.get("/admin").status_code == 200  # a fresh session is unaffected


def test_disabled_account_and_revoked_token_end_their_sessions(
    signed_in: SignedIn, settings: Settings, client: TestClient
) -> None:
    c, _ = signed_in(Role.admin)
    with session_scope(settings.db_url) as s:
        disable_user(s, "admin-user")
    assert _refused(c)
    r = _post_login(c, name="admin-user", password=PASSWORDS[Role.admin])
    assert r.status_code == 401  # a disabled account cannot sign in again
    with session_scope(settings.db_url) as s:
        issued = create_token(s, role="admin", name="ui-token")
    r = _post_login(client, method="token", token=issued.token)
    assert r.status_code == 303
    page = client.get("/admin")
    assert page.status_code == 200 and "token:" not in page.text
    assert "ui-token" in page.text and "API token" in page.text
    with session_scope(settings.db_url) as s:
        revoke_token(s, issued.id)
    assert _refused(client)


def test_forged_or_tampered_cookie_is_refused(signed_in: SignedIn) -> None:
    c, _ = signed_in(Role.admin)
    name = "__Host-deidgate_session"
    secret, mac = c.cookies[name].split(".")
    for forged in (f"{secret}.{mac[:-2]}AA", f"{secret[:-2]}AA.{mac}", secret, "x.y.z"):
        t = TestClient(c.app, base_url=BASE, follow_redirects=False, cookies={name: forged})
        assert _refused(t), forged


def test_failed_sign_ins_are_rate_limited_per_account_and_audited(
    client: TestClient, users: dict[Role, str], settings: Settings
) -> None:
    name = users[Role.auditor]
    for _ in range(settings.web_login_max_failures):
        r = _post_login(client, name=name, password="wrong password typed")
        assert r.status_code == 401
        assert "Wrong user name or password" in r.text
    r = _post_login(client, name=name, password=PASSWORDS[Role.auditor])
    assert r.status_code == 429  # even the right password waits out the window
    assert "Too many failed sign-ins for this account" in r.text
    assert "Try again in 15 minutes" in r.text
    other = _post_login(client, name=users[Role.staff], password=PASSWORDS[Role.staff])
    assert other.status_code == 303  # another account from the same address is not locked
    with session_scope(settings.db_url) as s:
        events = list(s.scalars(select(AuditEvent).where(
            AuditEvent.kind == "web.sign-in-failed").order_by(AuditEvent.seq)))
        reasons = [json.loads(e.details)["reason"] for e in events]
        text = " ".join(e.details for e in s.scalars(select(AuditEvent)))
    assert reasons == ["wrong-password"] * settings.web_login_max_failures + ["rate-limited"]
    assert "wrong password typed" not in text and PASSWORDS[Role.auditor] not in text


def test_rate_limit_per_client_address(client: TestClient, settings: Settings,
                                       users: dict[Role, str]) -> None:
    for i in range(settings.web_login_max_failures_per_client):
        r = _post_login(client, name=f"nobody-{i}", password="my-password-in-the-name-field")
        assert r.status_code == 401
    r = _post_login(client, name=users[Role.admin], password=PASSWORDS[Role.admin])
    assert r.status_code == 429
    assert "Too many failed sign-ins for this client address" in r.text
    with session_scope(settings.db_url) as s:
        text = " ".join(e.details for e in s.scalars(select(AuditEvent)))
    assert "nobody-" not in text  # names of accounts that do not exist are not recorded
    assert "my-password-in-the-name-field" not in text


def test_bad_tokens_are_audited_without_the_token(client: TestClient,
                                                   settings: Settings) -> None:
    bogus = "dgt_0123abcd_" + "A" * 43
    for token, why in ((bogus, "unknown-token"), ("not-a-token", "malformed-token")):
        r = _post_login(client, method="token", token=token)
        assert r.status_code == 401
        with session_scope(settings.db_url) as s:
            last = s.scalars(select(AuditEvent).order_by(AuditEvent.seq.desc())).first()
            assert last is not None and json.loads(last.details)["reason"] == why
            assert token not in last.details


def test_passwords_are_argon2id_and_rehashed_when_parameters_change(
    migrated_db: str, site_keys: SiteKeys
) -> None:
    old = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1, type=Type.ID)
    with session_scope(migrated_db) as s:
        user = create_user(s, name="rehash-me", role=Role.staff, password="a long passphrase 1")
        assert user.password_hash.startswith("$argon2id$")
        assert not HASHER.check_needs_rehash(user.password_hash)
        user.password_hash = old.hash("a long passphrase 1")
    with session_scope(migrated_db) as s:
        before = s.scalar(select(WebUser.password_hash).where(WebUser.name == "rehash-me"))
        assert before is not None and "m=8192,t=1,p=1" in before
        assert check_credentials(s, "rehash-me", "wrong one")[0] is None
    with session_scope(migrated_db) as s:  # a failed check leaves the old hash alone
        assert s.scalar(select(WebUser.password_hash)
                        .where(WebUser.name == "rehash-me")) == before
        user, why = check_credentials(s, "rehash-me", "a long passphrase 1")
        assert user is not None and why == ""
    with session_scope(migrated_db) as s:
        after = s.scalar(select(WebUser.password_hash).where(WebUser.name == "rehash-me"))
    assert after is not None and after != before
    assert not HASHER.check_needs_rehash(after)
    assert f"m={HASHER.memory_cost},t={HASHER.time_cost},p={HASHER.parallelism}" in after
    assert accounts.verify_password(after, "a long passphrase 1")


def test_password_rules(migrated_db: str) -> None:
    import pytest

    with session_scope(migrated_db) as s:
        for bad in ("short", "aaaaaaaaaaaaaaaa", "password-user"):
            with pytest.raises(accounts.AccountError):
                create_user(s, name="password-user", role=Role.staff, password=bad)
        with pytest.raises(accounts.AccountError):
            create_user(s, name="bad name!", role=Role.staff, password="a long passphrase 2")
        create_user(s, name="ok-user", role=Role.staff, password="a long passphrase 2")
        with pytest.raises(accounts.AccountError):  # names are never reused
            create_user(s, name="ok-user", role=Role.admin, password="a long passphrase 3")
