"""Server-side sessions named by a signed cookie, and the CSRF token bound to each.

Cookie value: ``<secret>.<mac>``; ``secret`` is 32 random bytes (base64url), ``mac`` an HMAC of
it under the site's web key (``SiteKeys.web``). The database stores only SHA-256(secret), so a
copy of the table opens no session, and a forged or truncated cookie is refused by the MAC
before any query. A session is valid while it is not revoked, has been used within the idle
timeout, is younger than the absolute timeout, and its user account (or API token) is still
active; roles are read from the account or token on every request, never from the session.

The CSRF token is another HMAC of the same secret (no extra state): it is useless without the
cookie, and the cookie cannot be read by script (HttpOnly) or sent cross-site (SameSite=Strict).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.core.config import Settings
from service.core.keys import SiteKeys, hmac_sha256
from service.core.security import Role
from service.db.base import as_utc, utcnow
from service.db.models.auth import ApiToken
from service.db.models.web import WebSession, WebUser

_SEEN_RESOLUTION = timedelta(seconds=30)  # a write per request is not needed to track idleness


def cookie_name(settings: Settings) -> str:
    """``__Host-`` outside development: the browser then insists on Secure, Path=/, no Domain."""
    return "deidgate_session" if settings.environment == "development" else \
        "__Host-deidgate_session"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def mac(keys: SiteKeys, purpose: str, value: str) -> str:
    return _b64(hmac_sha256(keys.web, purpose, value))


def new_secret() -> str:
    return _b64(secrets.token_bytes(32))


def sign(keys: SiteKeys, secret: str, purpose: str = "session-cookie") -> str:
    return f"{secret}.{mac(keys, purpose, secret)}"


def unsign(keys: SiteKeys, cookie: str | None, purpose: str = "session-cookie") -> str | None:
    if not cookie or cookie.count(".") != 1 or len(cookie) > 200:
        return None
    secret, sig = cookie.split(".")
    return secret if hmac.compare_digest(sig, mac(keys, purpose, secret)) else None


def csrf_token(keys: SiteKeys, secret: str) -> str:
    return mac(keys, "csrf", secret)


def check_csrf(keys: SiteKeys, secret: str, presented: str | None,
               purpose: str = "csrf") -> bool:
    expected = mac(keys, purpose, secret)
    return bool(presented) and hmac.compare_digest(str(presented), expected)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


@dataclass(frozen=True)
class WebPrincipal:
    """Who is signed in: what pages see instead of the session row."""

    kind: str  # user | token
    name: str
    role: Role
    session_id: int
    expires_at: datetime
    secret: str = field(repr=False)

    @property
    def actor(self) -> str:
        """The audit-log actor; token sessions act under the token's name, as the API does."""
        return f"{self.kind}:{self.name}"


def create_session(session: Session, settings: Settings, *, client: str,
                   user_id: int | None = None, token_id: int | None = None) -> tuple[str, int]:
    """A new session row; returns (secret, id). The caller signs the secret into the cookie."""
    secret = new_secret()
    now = utcnow()
    row = WebSession(key_hash=_digest(secret), user_id=user_id, token_id=token_id,
                     client=client[:64], created_at=now, last_seen_at=now,
                     expires_at=now + timedelta(hours=settings.web_session_max_hours))
    session.add(row)
    session.flush()
    return secret, row.id


def resolve(session: Session, settings: Settings, secret: str) -> WebPrincipal | None:
    """The principal behind a session secret, or None when it is unknown, revoked, idle too
    long, too old, or its account or token is no longer active (then it is revoked too)."""
    row = session.scalar(select(WebSession).where(WebSession.key_hash == _digest(secret)))
    if row is None or row.revoked_at is not None:
        return None
    now = utcnow()
    idle = timedelta(minutes=settings.web_session_idle_minutes)
    why = None
    if as_utc(row.expires_at) <= now:
        why = "expired"
    elif as_utc(row.last_seen_at) + idle <= now:
        why = "idle"
    name, role = "", None
    if why is None and row.user_id is not None:
        user = session.get(WebUser, row.user_id)
        if user is None or user.disabled_at is not None:
            why = "account disabled"
        else:
            name, role = user.name, Role(user.role)
    elif why is None:
        token = session.get(ApiToken, row.token_id)
        if token is None or token.revoked_at is not None:
            why = "token revoked"
        else:
            name, role = token.name, Role(token.role)
    if why is not None or role is None:
        row.revoked_at, row.revoked_why = now, why
        return None
    if now - as_utc(row.last_seen_at) >= _SEEN_RESOLUTION:
        row.last_seen_at = now
    return WebPrincipal(kind="user" if row.user_id is not None else "token", name=name,
                        role=role, session_id=row.id, secret=secret,
                        expires_at=min(as_utc(row.expires_at), now + idle))


def revoke(session: Session, session_id: int, why: str) -> None:
    row = session.get(WebSession, session_id)
    if row is not None and row.revoked_at is None:
        row.revoked_at, row.revoked_why = utcnow(), why[:32]
