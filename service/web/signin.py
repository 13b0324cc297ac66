"""Signing in with a password or an API token: rate limits and the audit trail.

Every failed attempt is counted twice, for the account name typed and for the client address,
over a sliding window (settings ``web_login_*``); past either limit, sign-in is refused without
checking the credentials, with a message that says which limit and for how long. Successful and
failed sign-ins are appended to the hash-chained audit log. What was typed is never recorded:
not the password or token, and not an account name that does not exist (people type passwords
into the name field). The failure rows keep a keyed hash of the name, which counts attempts per
name without storing it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import ColumnElement, delete, func, select
from sqlalchemy.orm import Session

from service.audit.store import AuditStore
from service.core.config import Settings
from service.core.keys import SiteKeys, hmac_sha256
from service.core.security import InvalidToken, authenticate
from service.db.base import as_utc, utcnow
from service.db.models.web import WebLoginFailure
from service.web import accounts
from service.web.sessions import create_session

ACTOR = "web"


class SignInRefused(Exception):
    """Shown to the person signing in as ``message``; ``reason`` is the audit code."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


@dataclass(frozen=True)
class SignedIn:
    secret: str
    session_id: int
    name: str
    role: str
    kind: str


def account_key(keys: SiteKeys, name: str) -> str:
    return hmac_sha256(keys.web, "sign-in-account", name.strip().lower()).hex()


def _window(settings: Settings) -> timedelta:
    return timedelta(minutes=settings.web_login_window_minutes)


def _limited(session: Session, settings: Settings, *, key: str | None,
             client: str) -> str | None:
    """Which limit is reached, as the message to show, or None."""
    now = utcnow()
    since = now - _window(settings)
    session.execute(delete(WebLoginFailure).where(WebLoginFailure.at < since))  # prune
    checks: list[tuple[str, ColumnElement[bool], int]] = [
        ("this client address", WebLoginFailure.client == client,
         settings.web_login_max_failures_per_client)]
    if key is not None:
        checks.insert(0, ("this account", WebLoginFailure.account_key == key,
                          settings.web_login_max_failures))
    for what, where, limit in checks:
        n, oldest = session.execute(select(func.count(), func.min(WebLoginFailure.at))
                                    .where(where, WebLoginFailure.at >= since)).one()
        if n >= limit and oldest is not None:
            wait = as_utc(oldest) + _window(settings) - now
            minutes = max(1, math.ceil(wait.total_seconds() / 60))
            return (f"Too many failed sign-ins for {what}: {n} in the last "
                    f"{settings.web_login_window_minutes} minutes. Try again in {minutes} "
                    f"minute{'s' if minutes != 1 else ''}, or ask an administrator.")
    return None


def _fail(session: Session, keys: SiteKeys, *, key: str | None, client: str, method: str,
          reason: str, account: str | None, message: str) -> SignInRefused:
    session.add(WebLoginFailure(account_key=key, client=client[:64], at=utcnow()))
    AuditStore(session, keys).log_event("web.sign-in-failed", actor=ACTOR, details={
        "method": method, "reason": reason, "account": account, "client": client[:64]})
    session.commit()  # the count and the record stand even though the request is refused
    return SignInRefused(message, reason)


def with_password(session: Session, settings: Settings, keys: SiteKeys, *, name: str,
                  password: str, client: str) -> SignedIn:
    key = account_key(keys, name) if name.strip() else None
    limited = _limited(session, settings, key=key, client=client)
    if limited is not None:
        raise _fail(session, keys, key=None, client=client, method="password",
                    reason="rate-limited", account=None, message=limited)
    user, why = accounts.check_credentials(session, name.strip(), password)
    if user is None:
        known = why != "unknown-account"
        raise _fail(session, keys, key=key, client=client, method="password", reason=why,
                    account=name.strip() if known else None,
                    message="Wrong user name or password, or the account is disabled.")
    session.execute(delete(WebLoginFailure).where(WebLoginFailure.account_key == key))
    secret, sid = create_session(session, settings, client=client, user_id=user.id)
    AuditStore(session, keys).log_event("web.sign-in", actor=f"user:{user.name}", details={
        "method": "password", "role": user.role, "session": sid, "client": client[:64]})
    return SignedIn(secret, sid, user.name, user.role, "user")


def _token_reason(reason: str) -> str:
    for word in ("malformed", "revoked", "unknown"):
        if word in reason:
            return f"{word}-token"
    return "invalid-token"


def with_token(session: Session, settings: Settings, keys: SiteKeys, *, token: str,
               client: str) -> SignedIn:
    limited = _limited(session, settings, key=None, client=client)
    if limited is not None:
        raise _fail(session, keys, key=None, client=client, method="token",
                    reason="rate-limited", account=None, message=limited)
    try:
        who = authenticate(session, token.strip())
    except InvalidToken as exc:
        raise _fail(session, keys, key=None, client=client, method="token",
                    reason=_token_reason(exc.reason), account=None,
                    message="That API token is not valid (unknown, revoked or mistyped).") \
            from None
    secret, sid = create_session(session, settings, client=client, token_id=who.token_id)
    AuditStore(session, keys).log_event("web.sign-in", actor=who.actor, details={
        "method": "token", "role": who.role.value, "session": sid, "client": client[:64]})
    return SignedIn(secret, sid, who.name, who.role.value, "token")
