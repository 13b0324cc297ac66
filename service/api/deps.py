"""What routes depend on: settings, a database session, the site keys, and the caller.

Route signatures read as a list of needs (``session: SessionDep, who: CurrentPrincipal``), and
every role check is a ``require_role(...)`` dependency that carries its roles, so the app can be
asked which roles each route admits (the role-matrix test does exactly that).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Annotated, Any

import fastapi.routing
from fastapi import Depends, FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from service.api.errors import ApiError
from service.core.config import Settings
from service.core.errors import SiteKeyError
from service.core.keys import SiteKeys
from service.core.security import InvalidToken, Principal, Role, authenticate
from service.db.session import session_scope

log = logging.getLogger(__name__)
_BEARER = {"WWW-Authenticate": "Bearer"}
# auto_error=False: we answer a missing token ourselves, in our error shape, with 401.
_bearer = HTTPBearer(auto_error=False, description="API token from `deidgate token create`")


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_session(request: Request) -> Iterator[Session]:
    """One transaction per request: committed before the response is sent, else rolled back."""
    with session_scope(request.app.state.settings.db_url) as session:
        yield session


def get_keys(request: Request) -> SiteKeys:
    """The site keys, loaded once per app (only routes that seal, log or decrypt ask).

    A key file named in the settings must exist: generating a fresh one there would silently
    start a second pseudonym space. Only the default location is created on first use.
    """
    keys: SiteKeys | None = request.app.state.keys
    if keys is None:
        settings: Settings = request.app.state.settings
        try:
            keys = SiteKeys.for_settings(settings)
        except SiteKeyError as exc:
            log.error("site key unavailable: %s", exc.reason)  # paths stay in the server log
            raise ApiError(
                503, exc.code, "the site key is not available; see the server log"
            ) from None
        request.app.state.keys = keys
    return keys


SettingsDep = Annotated[Settings, Depends(get_settings)]
# scope="function": the commit happens before the response leaves, so a client never sees
# 201 for a job whose row then failed to commit.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
KeysDep = Annotated[SiteKeys, Depends(get_keys)]


def get_principal(
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None:
        raise ApiError(
            401,
            "unauthorized",
            "missing API token: send 'Authorization: Bearer <token>' "
            "(create one with `deidgate token create --role ROLE`)",
            headers=_BEARER,
        )
    try:
        return authenticate(session, credentials.credentials)
    except InvalidToken as exc:
        raise ApiError(401, "unauthorized", exc.reason, headers=_BEARER) from None


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


class RoleCheck:
    """A dependency admitting only ``roles``; inspectable, so tests can list every route's roles."""

    def __init__(self, *roles: Role) -> None:
        if not roles:
            raise ValueError("require_role needs at least one role")
        self.roles = frozenset(roles)

    def __call__(self, principal: CurrentPrincipal) -> Principal:
        if principal.role not in self.roles:
            allowed = ", ".join(sorted(r.value for r in self.roles))
            raise ApiError(
                403,
                "forbidden",
                f"role '{principal.role.value}' may not use this endpoint (allowed: {allowed})",
            )
        return principal

    def __repr__(self) -> str:
        return f"RoleCheck({', '.join(sorted(r.value for r in self.roles))})"


def require_role(*roles: Role) -> RoleCheck:
    return RoleCheck(*roles)


def _roles(dependant: Dependant) -> frozenset[Role] | None:
    checks: list[RoleCheck] = []
    stack = [dependant]
    while stack:
        dep = stack.pop()
        if isinstance(dep.call, RoleCheck):
            checks.append(dep.call)
        stack.extend(dep.dependencies)
    if not checks:
        return None
    roles = frozenset(Role)
    for check in checks:  # a router-level and a route-level check must both pass
        roles &= check.roles
    return roles


def operation_dependants(app: FastAPI) -> Iterator[tuple[str, str, Dependant]]:
    """``(method, path, dependant)`` for every operation of the app's OpenAPI document.

    Recent FastAPI keeps included routers nested; ``iter_route_contexts`` flattens them with
    their prefixes and router-level dependencies applied. Older versions flatten on include.
    """
    flatten = getattr(fastapi.routing, "iter_route_contexts", None)
    routes: Iterable[Any] = flatten(app.routes) if flatten is not None else app.routes
    for route in routes:
        dependant = getattr(route, "dependant", None)
        if dependant is None:  # Starlette's own routes: /docs, the OpenAPI document
            continue
        if not getattr(route, "include_in_schema", True):  # the web UI (service.web)
            continue
        for method in sorted(route.methods or ()):
            yield method, route.path, dependant


def depends_on(dependant: Dependant, call: Any) -> bool:
    """Whether ``call`` is anywhere in the dependency tree (a session, the site keys...)."""
    stack = [dependant]
    while stack:
        dep = stack.pop()
        if dep.call is call:
            return True
        stack.extend(dep.dependencies)
    return False


def api_operations(app: FastAPI) -> Iterator[tuple[str, str, frozenset[Role] | None]]:
    """``(method, path, roles)`` for every operation; roles None means no role check guards it."""
    for method, path, dependant in operation_dependants(app):
        yield method, path, _roles(dependant)
