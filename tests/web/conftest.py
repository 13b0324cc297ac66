"""Web UI fixtures: the app (API + UI) on a real migrated database, one account per role,
and a client that signs in through the real form (pre-session cookie, login CSRF, argon2id).

The client talks https (``https://testserver``) with production settings, so the cookies are
the real ones: ``__Host-`` prefixed, Secure, HttpOnly, SameSite=Strict.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, sync_playwright

from service.api.app import create_app
from service.core.config import Settings
from service.core.security import Role
from service.db.session import session_scope
from service.web.accounts import create_user
from tests.web.browser import ARGS, CHROMIUM, SHOTS, Checker

BASE = "https://testserver"
ORIGIN = {"Origin": BASE}
PASSWORDS = {r: f"correct horse {r.value} battery" for r in Role}
_CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')
_CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]*)"')


@pytest.fixture()
def app(settings: Settings, migrated_db: str) -> FastAPI:
    return create_app(settings)


@pytest.fixture()
def users(migrated_db: str) -> dict[Role, str]:
    with session_scope(migrated_db) as s:
        for role in Role:
            create_user(s, name=f"{role.value}-user", role=role, password=PASSWORDS[role])
    return {r: f"{r.value}-user" for r in Role}


@pytest.fixture()
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, base_url=BASE, raise_server_exceptions=False,
                    follow_redirects=False) as c:
        yield c


def form_csrf(html: str) -> str:
    m = _CSRF_FIELD.search(html)
    assert m, "no csrf_token field on the page"
    return m.group(1)


def meta_csrf(html: str) -> str:
    m = _CSRF_META.search(html)
    assert m and m.group(1), "no csrf-token meta on the page"
    return m.group(1)


def sign_in(client: TestClient, name: str, password: str) -> str:
    """Sign in through the form; returns the session's CSRF token."""
    r = client.get("/login")
    assert r.status_code == 200
    r = client.post("/login", headers=ORIGIN, data={
        "method": "password", "name": name, "password": password,
        "csrf_token": form_csrf(r.text)})
    assert r.status_code == 303, r.text
    home = client.get("/", follow_redirects=True)
    assert home.status_code == 200
    return meta_csrf(home.text)


@pytest.fixture()
def signed_in(app: FastAPI, users: dict[Role, str]) -> Iterator[Callable[[Role], tuple[
        TestClient, str]]]:
    """``signed_in(role)`` -> (a client with that role's session, its CSRF token)."""
    clients: list[TestClient] = []

    def make(role: Role) -> tuple[TestClient, str]:
        c = TestClient(app, base_url=BASE, raise_server_exceptions=False,
                       follow_redirects=False)
        c.__enter__()
        clients.append(c)
        return c, sign_in(c, users[role], PASSWORDS[role])

    yield make
    for c in clients:
        c.__exit__(None, None, None)


# The browser tests' Chromium (one per test module) and a fresh context per test, with the
# checker (CSP violations, console errors) attached.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    print(f"\nscreenshots: {SHOTS}")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture()
def page(browser: Browser) -> Iterator[tuple[Any, Checker]]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    checker = Checker()
    checker.attach(pg)
    try:
        yield pg, checker
    finally:
        context.close()
