"""Driving Debian's Chromium with Playwright: the browser, a UI server, page checks.

Playwright never downloads a browser here (no ``playwright install``): it launches
/usr/bin/chromium, which ``./run test`` installs with apt. Every page a test opens is checked
with axe-core (WCAG 2.0/2.1 A and AA rules) and photographed into ``test-output/web/``; any
Content-Security-Policy violation reported by the browser fails the test.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from axe_playwright_python.sync_playwright import Axe

from service.core.config import Settings
from service.core.security import Role
from service.db.session import session_scope
from service.web.accounts import create_user
from tests.peers.net import free_port, uvicorn_in_thread

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOTS = Path(__file__).resolve().parents[2] / "test-output" / "web"
WCAG = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]
PASSWORD = {r: f"browser test {r.value} passphrase" for r in Role}
_AXE = Axe()


def add_users(db_url: str) -> dict[Role, str]:
    with session_scope(db_url) as s:
        for role in Role:
            create_user(s, name=f"ui-{role.value}", role=role, password=PASSWORD[role])
    return {r: f"ui-{r.value}" for r in Role}


@contextmanager
def ui_server(settings: Settings) -> Iterator[str]:
    """The whole app (API + UI) under uvicorn on 127.0.0.1 and a free port, in a thread."""
    import uvicorn

    from service.api.app import create_app

    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=free_port(),
                            log_level="warning", lifespan="on")
    with uvicorn_in_thread(config) as port:
        yield f"http://127.0.0.1:{port}"


@dataclass
class Checker:
    """Collects CSP violations and runs axe; one per browser context."""

    csp_errors: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)

    def attach(self, page: Any) -> None:
        page.on("console", lambda m: self.csp_errors.append(m.text)
                if "Content Security Policy" in m.text else None)

    def page(self, page: Any, name: str) -> None:
        """Screenshot the page, then fail on any WCAG 2 A/AA violation or CSP report."""
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.wait_for_load_state("networkidle")
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
        result = _AXE.run(page, options={"runOnly": {"type": "tag", "values": WCAG}})
        assert result.violations_count == 0, f"{name}: {result.generate_report()}"
        assert not self.csp_errors, f"{name}: CSP violations: {self.csp_errors}"
        self.checked.append(name)


def sign_in(page: Any, base: str, name: str, password: str) -> None:
    page.goto(f"{base}/login")
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.wait_for_load_state("networkidle")
    assert "/login" not in page.url, page.content()[:2000]
