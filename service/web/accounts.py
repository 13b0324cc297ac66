"""User accounts for the web UI: argon2id password hashes, and the operations the CLI exposes.

Unlike API tokens (256 random bits, so a fast digest is right; see ``service.core.security``),
passwords are chosen by people and must survive an offline guessing attack on a stolen
database: argon2id, memory-hard, with argon2-cffi's RFC 9106 parameters. When those parameters
change (a library upgrade, or a site raising them), a hash made under the old ones is replaced
at the next successful sign-in, the only moment the plain password is at hand.

Roles are the API's (``service.core.security.Role``). Research coordinators sign in with the
``service`` role: it is the role the API gives to whoever submits, cancels and retries
extraction jobs, and a separate role with the same rights would only be a second name to keep
in step in the token table, the API's role matrix and this one.
"""

from __future__ import annotations

import re

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.core.errors import DeidgateError
from service.core.security import Role
from service.db.base import utcnow
from service.db.models.web import WebSession, WebUser

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MIN_PASSWORD = 12
MAX_PASSWORD = 1024  # argon2 takes any length; a cap keeps a huge form field from costing more

HASHER = PasswordHasher(type=Type.ID)  # library defaults: t=3, m=64 MiB, p=4 (RFC 9106)
# Verified against when the account does not exist, so both answers take the same time.
_DUMMY = HASHER.hash("deidgate-no-such-account")


class AccountError(DeidgateError):
    code = "account"


class AccountNotFound(AccountError):
    code = "account-not-found"


def check_name(name: str) -> str:
    if not _NAME_RE.match(name or ""):
        raise AccountError("a user name is 1-64 characters: letters, digits, '.', '_' or '-'",
                           code="account-name")
    return name


def check_password(password: str, *, name: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"a password needs at least {MIN_PASSWORD} characters",
                           code="account-password")
    if len(password) > MAX_PASSWORD:
        raise AccountError(f"a password has at most {MAX_PASSWORD} characters",
                           code="account-password")
    if not password.strip() or len(set(password)) < 4 or password.lower() == name.lower():
        raise AccountError("that password is too easy to guess", code="account-password")
    return password


def hash_password(password: str, hasher: PasswordHasher = HASHER) -> str:
    return hasher.hash(password)


def verify_password(stored: str, password: str, hasher: PasswordHasher = HASHER) -> bool:
    try:
        return hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


def create_user(session: Session, *, name: str, role: Role | str, password: str) -> WebUser:
    check_name(name)
    try:
        role = Role(role)
    except ValueError:
        raise AccountError(f"unknown role; choose one of {', '.join(r.value for r in Role)}",
                           code="account-role") from None
    check_password(password, name=name)
    if session.scalar(select(WebUser.id).where(WebUser.name == name)) is not None:
        raise AccountError("a user with this name exists (names are never reused)",
                           code="account-name")
    user = WebUser(name=name, role=role.value, password_hash=hash_password(password))
    session.add(user)
    session.flush()
    return user


def get_user(session: Session, name: str) -> WebUser:
    user = session.scalar(select(WebUser).where(WebUser.name == name))
    if user is None:
        raise AccountNotFound(f"no user named {name!r}")
    return user


def list_users(session: Session) -> list[WebUser]:
    return list(session.scalars(select(WebUser).order_by(WebUser.id)))


def revoke_sessions(session: Session, *, user_id: int | None = None,
                    token_id: int | None = None, why: str) -> int:
    q = update(WebSession).where(WebSession.revoked_at.is_(None))
    q = q.where(WebSession.user_id == user_id) if user_id is not None else \
        q.where(WebSession.token_id == token_id)
    res = session.execute(q.values(revoked_at=utcnow(), revoked_why=why[:32]))
    return int(res.rowcount or 0)  # type: ignore[attr-defined]


def set_password(session: Session, name: str, password: str) -> WebUser:
    """New password; every open session of the account ends (whoever knew the old one)."""
    user = get_user(session, name)
    check_password(password, name=name)
    user.password_hash = hash_password(password)
    user.password_changed_at = utcnow()
    revoke_sessions(session, user_id=user.id, why="password changed")
    return user


def disable_user(session: Session, name: str) -> WebUser:
    """Disable (idempotently) and end every session; the row stays so audit actors resolve."""
    user = get_user(session, name)
    if user.disabled_at is None:
        user.disabled_at = utcnow()
    revoke_sessions(session, user_id=user.id, why="account disabled")
    return user


def check_credentials(session: Session, name: str, password: str,
                      hasher: PasswordHasher = HASHER) -> tuple[WebUser | None, str]:
    """``(user, "")`` for the active account whose password this is, else ``(None, why)`` with
    why one of unknown-account, wrong-password, account-disabled (for the audit log; the person
    signing in is told only "wrong name or password"). Rehashes when the parameters changed."""
    user = session.scalar(select(WebUser).where(WebUser.name == name)) if _NAME_RE.match(
        name or "") else None
    if user is None:
        verify_password(_DUMMY, password, hasher)
        return None, "unknown-account"
    if not verify_password(user.password_hash, password, hasher):
        return None, "wrong-password"
    if user.disabled_at is not None:
        return None, "account-disabled"
    if hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hasher.hash(password)
    user.last_login_at = utcnow()
    return user, ""


DEMO_ROLES = (Role.staff, Role.admin, Role.auditor, Role.service)


def create_demo_users(session: Session, stamp: str) -> dict[Role, tuple[str, str]]:
    """One account per role for ``deidgate demo``, each with a freshly generated password that
    the demo prints once; never a default one. Returns role -> (name, password)."""
    import secrets

    out: dict[Role, tuple[str, str]] = {}
    for role in DEMO_ROLES:
        name, password = f"demo-{role.value}-{stamp}", secrets.token_urlsafe(12)
        create_user(session, name=name, role=role, password=password)
        out[role] = (name, password)
    return out
