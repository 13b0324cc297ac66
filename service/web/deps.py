"""What web pages depend on: the signed-in principal, its role, and the CSRF token.

Every page and action declares ``require_web_role(...)``; the check is an inspectable object so
the web role-matrix test can list each route's roles and fail on a route without one. On a
state-changing request (anything but GET/HEAD) the same check verifies the CSRF token, from the
``X-CSRF-Token`` header (htmx, via static/app.js) or the ``csrf_token`` form field. The Origin
check runs before any of this, in ``service.web.security``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Annotated, Any

import fastapi.routing
from fastapi import Depends, FastAPI, Request
from fastapi.dependencies.models import Dependant

from service.api.deps import SessionDep, get_keys
from service.core.security import Role
from service.web.sessions import WebPrincipal, check_csrf, cookie_name, resolve, unsign

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class SignInNeeded(Exception):
    """No valid session: the browser is sent to /login."""


class WebForbidden(Exception):
    def __init__(self, message: str, *, status: int = 403) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


async def presented_csrf(request: Request) -> str | None:
    """The CSRF token a state-changing request carries (header first, then the form)."""
    if request.method in SAFE_METHODS:
        return None
    header = request.headers.get("x-csrf-token")
    if header:
        return header
    ctype = request.headers.get("content-type", "")
    if ctype.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        value = (await request.form()).get("csrf_token")
        return value if isinstance(value, str) else None
    return None


def current_principal(request: Request, session: SessionDep) -> WebPrincipal | None:
    """The session's principal, or None; cached on the request for the templates."""
    if hasattr(request.state, "web_principal"):
        cached: WebPrincipal | None = request.state.web_principal
        return cached
    settings = request.app.state.settings
    secret = unsign(get_keys(request), request.cookies.get(cookie_name(settings)))
    principal = resolve(session, settings, secret) if secret else None
    request.state.web_principal = principal
    return principal


class WebRoleCheck:
    """Admits a signed-in principal of one of ``roles``; checks CSRF on unsafe methods."""

    def __init__(self, *roles: Role) -> None:
        if not roles:
            raise ValueError("require_web_role needs at least one role")
        self.roles = frozenset(roles)

    def __call__(
        self,
        request: Request,
        session: SessionDep,
        csrf: Annotated[str | None, Depends(presented_csrf)],
    ) -> WebPrincipal:
        principal = current_principal(request, session)
        if principal is None:
            raise SignInNeeded()
        if principal.role not in self.roles:
            allowed = ", ".join(sorted(r.value for r in self.roles))
            raise WebForbidden(f"Your role ({principal.role.value}) may not open this page. "
                               f"It is for: {allowed}.")
        if request.method not in SAFE_METHODS and not check_csrf(
                get_keys(request), principal.secret, csrf):
            raise WebForbidden("This form's security token is missing or out of date. "
                               "Reload the page and try again.")
        return principal

    def __repr__(self) -> str:
        return f"WebRoleCheck({', '.join(sorted(r.value for r in self.roles))})"


def require_web_role(*roles: Role) -> WebRoleCheck:
    return WebRoleCheck(*roles)


def web_roles(dependant: Dependant) -> frozenset[Role] | None:
    checks: list[WebRoleCheck] = []
    stack = [dependant]
    while stack:
        dep = stack.pop()
        if isinstance(dep.call, WebRoleCheck):
            checks.append(dep.call)
        stack.extend(dep.dependencies)
    if not checks:
        return None
    roles = frozenset(Role)
    for check in checks:
        roles &= check.roles
    return roles


def web_operations(app: FastAPI) -> Iterator[tuple[str, str, frozenset[Role] | None]]:
    """``(method, path, roles)`` for every UI route (those left out of the OpenAPI schema)."""
    flatten = getattr(fastapi.routing, "iter_route_contexts", None)
    routes: Iterable[Any] = flatten(app.routes) if flatten is not None else app.routes
    for route in routes:
        dependant = getattr(route, "dependant", None)
        if dependant is None or getattr(route, "include_in_schema", True):
            continue
        for method in sorted(route.methods or ()):
            yield method, route.path, web_roles(dependant)
