"""Sign-in (password or API token), sign-out, and the landing page.

The sign-in form is protected like every other form, before any session exists: a short-lived,
signed pre-session cookie and a form token derived from it (login CSRF: no other site can sign
a browser in to an account of its choosing). A successful sign-in always starts a new session
with a new secret (no fixation) and drops the pre-session cookie.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from service.api.deps import SessionDep, SettingsDep, get_keys
from service.audit.store import AuditStore
from service.core.config import Settings
from service.core.security import Role
from service.web import signin
from service.web.deps import current_principal, require_web_role
from service.web.render import nav_for, page
from service.web.sessions import (
    WebPrincipal,
    check_csrf,
    cookie_name,
    mac,
    new_secret,
    revoke,
    sign,
    unsign,
)

router = APIRouter(include_in_schema=False)
AnyRole = Annotated[WebPrincipal, Depends(require_web_role(*Role))]
_PRE = "login-cookie"
_PRE_CSRF = "login-csrf"


def pre_cookie_name(settings: Settings) -> str:
    return "deidgate_login" if settings.environment == "development" else "__Host-deidgate_login"


def set_cookie(response: Response, settings: Settings, name: str, value: str,
               max_age: int | None = None) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/", httponly=True,
                        samesite="strict", secure=settings.environment != "development")


def client_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _login_page(request: Request, settings: Settings, *, error: str = "", status: int = 200,
                name: str = "", tab: str = "password") -> HTMLResponse:
    keys = get_keys(request)
    pre = unsign(keys, request.cookies.get(pre_cookie_name(settings)), _PRE) or new_secret()

    resp = page(request, "login.html", title="Sign in", status=status, error=error,
                login_csrf=mac(keys, _PRE_CSRF, pre), name=name, tab=tab)
    set_cookie(resp, settings, pre_cookie_name(settings), sign(keys, pre, _PRE), max_age=3600)
    return resp


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    if current_principal(request, session) is not None:
        return RedirectResponse("/", status_code=303)
    return _login_page(request, settings)


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    method: Annotated[str, Form()] = "password",
    name: Annotated[str, Form(max_length=256)] = "",
    password: Annotated[str, Form(max_length=4096)] = "",
    token: Annotated[str, Form(max_length=256)] = "",
    csrf_token: Annotated[str, Form(max_length=256)] = "",
) -> Response:
    keys = get_keys(request)
    pre = unsign(keys, request.cookies.get(pre_cookie_name(settings)), _PRE)
    tab = "token" if method == "token" else "password"
    if pre is None or not check_csrf(keys, pre, csrf_token, _PRE_CSRF):
        return _login_page(request, settings, status=403, tab=tab,
                           error="The sign-in form had expired. Please try again.")
    client = client_of(request)
    try:
        if tab == "token":
            done = signin.with_token(session, settings, keys, token=token, client=client)
        else:
            done = signin.with_password(session, settings, keys, name=name, password=password,
                                        client=client)
    except signin.SignInRefused as exc:
        status = 429 if exc.reason == "rate-limited" else 401
        return _login_page(request, settings, error=exc.message, status=status, tab=tab,
                           name=name if tab == "password" else "")
    resp = RedirectResponse("/", status_code=303)
    set_cookie(resp, settings, cookie_name(settings), sign(keys, done.secret))
    resp.delete_cookie(pre_cookie_name(settings), path="/")
    return resp


@router.post("/logout")
def logout(request: Request, session: SessionDep, settings: SettingsDep,
           who: AnyRole) -> Response:
    revoke(session, who.session_id, "signed out")
    AuditStore(session, get_keys(request)).log_event(
        "web.sign-out", actor=who.actor, details={"session": who.session_id})
    resp = RedirectResponse("/login", status_code=303)
    resp.delete_cookie(cookie_name(settings), path="/")
    return resp


@router.get("/", response_class=HTMLResponse)
def home(request: Request, who: AnyRole) -> Response:
    """The role's first page; a role with none yet gets a page that says so."""
    items = nav_for(request, who.role)
    if items:
        return RedirectResponse(items[0].path, status_code=303)
    return page(request, "home.html", title="Home")
