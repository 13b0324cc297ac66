"""Templates, the navigation per role, and the one function pages render through.

Navigation lists only pages the role may open and the app actually has: the screening
worklist (``/worklist``, phase 2 of issue 10, built on the scoring worker) appears for staff and
admins as soon as its router is mounted, with no change here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from service.api.deps import get_keys
from service.core.security import Role
from service.web.sessions import WebPrincipal, csrf_token

HERE = Path(__file__).resolve().parent
TEMPLATES = Jinja2Templates(directory=str(HERE / "templates"))
TEMPLATES.env.autoescape = True
TEMPLATES.env.trim_blocks = True
TEMPLATES.env.lstrip_blocks = True


@dataclass(frozen=True)
class NavItem:
    path: str
    label: str
    roles: frozenset[Role]


A, S, AU, SV = Role.admin, Role.staff, Role.auditor, Role.service
NAV = (
    NavItem("/worklist", "Worklist", frozenset({S, A})),
    NavItem("/jobs", "Jobs", frozenset({A, SV})),
    NavItem("/admin", "Administration", frozenset({A})),
    NavItem("/audit", "Audit", frozenset({AU})),
)


def _get_paths(request: Request) -> set[str]:
    """Paths the app answers GET on (cached per app: routes do not change once serving)."""
    paths: set[str] | None = getattr(request.app.state, "web_get_paths", None)
    if paths is None:
        from service.web.deps import web_operations

        paths = {p for m, p, _ in web_operations(request.app) if m == "GET"}
        request.app.state.web_get_paths = paths
    return paths


def nav_for(request: Request, role: Role) -> list[NavItem]:
    paths = _get_paths(request)
    return [n for n in NAV if role in n.roles and n.path in paths]


@lru_cache(maxsize=64)
def _static_version(name: str) -> str:
    return hashlib.sha256((HERE / "static" / name).read_bytes()).hexdigest()[:12]


def static_url(name: str) -> str:
    """``/static/NAME?v=HASH``: cacheable, and a new file is fetched after an upgrade."""
    return f"/static/{name}?v={_static_version(name)}"


TEMPLATES.env.globals["static_url"] = static_url


def page(request: Request, template: str, *, title: str, status: int = 200,
         headers: dict[str, str] | None = None, **context: object) -> HTMLResponse:
    """Render ``template``; ``title`` names the page, never a patient or a pseudonym."""
    principal: WebPrincipal | None = getattr(request.state, "web_principal", None)
    ctx: dict[str, Any] = {
        "title": title,
        "principal": principal,
        "nav": nav_for(request, principal.role) if principal else [],
        "csrf": csrf_token(get_keys(request), principal.secret) if principal else "",
        "current": request.url.path,
        **context,
    }
    return TEMPLATES.TemplateResponse(request, template, ctx, status_code=status,
                                      headers=headers)


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"
