"""Headers on every response, and the Origin check on every state-changing UI request.

- Content-Security-Policy: scripts and styles only from our own files (no inline code, so an
  injected ``<script>`` or ``style=`` does nothing), no framing, forms post only to us.
- ``Cache-Control: no-store`` on everything but the static files: the pages show pseudonyms,
  job states and, on the audit pages, re-identified values; none may stay in a browser cache
  or come back with the Back button.
- Origin check: a POST (PUT, PATCH, DELETE) to the UI must carry an Origin, or failing that a
  Referer, naming this host. Together with the CSRF token and SameSite cookies this refuses
  cross-site requests even from a browser that ignores one of the three. The REST API under
  /api/ is exempt: it authenticates with bearer tokens, which browsers never attach by
  themselves.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; "
       "base-uri 'none'")
_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Swagger UI (/docs) loads its script from a CDN and starts it inline; it keeps its own policy.
_NO_CSP = ("/docs",)


def same_origin(headers: Headers, scheme: str) -> bool:
    """Origin (else Referer) names the host this request was sent to."""
    host = headers.get("host", "")
    origin = headers.get("origin")
    if origin is None or origin == "null":
        if origin == "null":
            return False
        referer = headers.get("referer")
        if not referer:
            return False
        origin = referer
    parts = urlsplit(origin)
    # behind a TLS-terminating proxy the request arrives as http while the page was https
    return bool(host) and parts.netloc == host and parts.scheme in {scheme, "https"}


class SecurityHeaders:
    """Pure ASGI middleware (no body buffering; streaming responses pass through)."""

    def __init__(self, app: ASGIApp, *, production: bool) -> None:
        self.app = app
        self.production = production

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        is_api = path.startswith("/api/")
        if scope["method"] in _UNSAFE and not is_api and not same_origin(
                Headers(scope=scope), scope.get("scheme", "http")):
            refused = PlainTextResponse(
                "Refused: this request did not come from a page of this site (Origin check).",
                status_code=403)
            await self._finish(refused, scope, receive, send, path)
            return

        async def _send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self._add(message, path, scope)
            await send(message)

        await self.app(scope, receive, _send)

    async def _finish(self, response: PlainTextResponse, scope: Scope, receive: Receive,
                      send: Send, path: str) -> None:
        async def _send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self._add(message, path, scope)
            await send(message)

        await response(scope, receive, _send)

    def _add(self, message: Message, path: str, scope: Scope) -> None:
        headers = list(message.get("headers", []))
        present = {k.lower() for k, _ in headers}

        def put(name: str, value: str) -> None:
            if name.encode() not in present:
                headers.append((name.encode(), value.encode()))

        if not path.startswith(_NO_CSP):
            put("content-security-policy", CSP)
        put("x-content-type-options", "nosniff")
        put("x-frame-options", "DENY")
        put("referrer-policy", "same-origin")
        put("cross-origin-opener-policy", "same-origin")
        put("permissions-policy", "camera=(), microphone=(), geolocation=()")
        if self.production and scope.get("scheme") == "https":  # never over plain (RFC 6797)
            put("strict-transport-security", "max-age=31536000")
        if not path.startswith("/static/"):
            put("cache-control", "no-store")
        message["headers"] = headers
