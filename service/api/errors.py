"""One error body for every failure: ``{"error": {"code": "...", "message": "..."}}``.

Clients (the CLI, the web UI, a research coordinator's script) branch on ``code`` and show
``message``. Messages are written for people and never carry PHI: validation errors name the
field and position but drop the submitted value (pydantic's ``input`` and ``ctx``), deidgate
errors carry PHI-free reasons by contract, and anything unexpected becomes a bare 500 whose
details go to the server log only as the exception type.
"""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Iterable, Sequence
from typing import Any

import fastapi.routing
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.core.errors import DeidgateError, Retryable, SiteKeyError

log = logging.getLogger(__name__)

_STATUS_CODES = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    409: "conflict",
    413: "too-large",
    415: "unsupported-media-type",
    422: "invalid-request",
    429: "too-many-requests",
    500: "internal",
    502: "upstream-failed",
    503: "unavailable",
}
# Field names are ours; anything else in a location (an unexpected key, say) came from the
# client and could be anything, including an identifier, so it is not echoed.
_SAFE_LOC = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
# What FastAPI raises (as a 400) when it cannot decode a request body at all.
_FASTAPI_BODY_ERROR = "There was an error parsing the body"


class ApiError(Exception):
    """Raised by routes for a specific, PHI-free refusal with its HTTP status."""

    def __init__(
        self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)


def _loc(parts: Sequence[Any], *, drop_last: bool) -> str:
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        where, parts = str(parts[0]), list(parts[1:])
    else:
        where, parts = "", list(parts)
    if drop_last and parts:
        parts = parts[:-1]
    out: list[str] = []
    for p in parts:
        if isinstance(p, int):
            out.append(f"[{p}]")
        elif isinstance(p, str) and _SAFE_LOC.match(p):
            out.append(f".{p}" if out else p)
        else:
            out.append(".?" if out else "?")
    path = "".join(out)
    return f"{where} {path}".strip() if path else where


def describe_validation(errors: Iterable[Any]) -> str:
    """Field-by-field messages without the offending values."""
    parts: list[str] = []
    for err in errors:
        kind = str(err.get("type", ""))
        if kind == "extra_forbidden":
            where = _loc(err.get("loc", ()), drop_last=True) or "body"
            parts.append(f"{where}: unexpected field (field names are listed in /docs)")
            continue
        if kind == "json_invalid":
            parts.append("body: not valid JSON")
            continue
        where = _loc(err.get("loc", ()), drop_last=False)
        msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        parts.append(f"{where}: {msg}" if where else msg)
    return "; ".join(parts) or "invalid request"


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid-request", describe_validation(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 400 and exc.detail == _FASTAPI_BODY_ERROR:
            # A body FastAPI cannot even decode (not UTF-8, say) is invalid as given, like
            # malformed JSON, and so gets the same 422 a client already handles.
            return error_response(422, "invalid-request", "body: not valid JSON")
        if exc.status_code == 405:
            headers["Allow"] = allowed_methods(request.app, request.url.path, headers)
        code = _STATUS_CODES.get(exc.status_code, "error")
        # Starlette's own details ("Not Found", "Method Not Allowed") never echo the URL.
        message = exc.detail if isinstance(exc.detail, str) else code
        return error_response(exc.status_code, code, message, headers or None)

    @app.exception_handler(DeidgateError)
    async def _deidgate(_: Request, exc: DeidgateError) -> JSONResponse:
        # What reaches here unmapped by a route: transient trouble is 503 (try again), a
        # missing site key is the operator's to fix, anything else refuses the request as given.
        if isinstance(exc, Retryable):
            return error_response(503, exc.code, exc.reason, {"Retry-After": "5"})
        if isinstance(exc, SiteKeyError):
            log.error("site key unavailable: %s", exc.reason)
            return error_response(503, exc.code, "the site key is not available; see the log")
        return error_response(422, exc.code, exc.reason)

    @app.exception_handler(OperationalError)
    async def _database(_: Request, exc: OperationalError) -> JSONResponse:
        # The driver's text can quote statement parameters (identifiers): log the type only.
        log.error("database unavailable: %s", type(exc.orig).__name__)
        return error_response(
            503, "database-unavailable", "the database is unavailable; retry shortly",
            {"Retry-After": "5"},
        )

    # Not an exception handler: Starlette re-raises after calling those, and the server would
    # then log the exception's text. The middleware contains the failure instead.
    app.add_middleware(ContainUnexpected)


def allowed_methods(app: FastAPI, path: str, headers: dict[str, str]) -> str:
    """Every method of every route at ``path``, for the 405's ``Allow`` header.

    Starlette answers 405 from the first route whose path matched, so ``GET /jobs`` and
    ``POST /jobs`` (two routes) would each claim to be the only method there.
    """
    methods = {m.strip() for m in headers.get("Allow", "").split(",") if m.strip()}
    flatten = getattr(fastapi.routing, "iter_route_contexts", None)
    routes: Iterable[Any] = flatten(app.routes) if flatten is not None else app.routes
    for route in routes:
        route_methods = getattr(route, "methods", None)
        route_path = getattr(route, "path", None)
        if not route_methods or not isinstance(route_path, str):
            continue
        regex = getattr(route, "path_regex", None) or compile_path(route_path)[0]
        if regex.match(path):
            methods |= set(route_methods)
    return ", ".join(sorted(methods))


def log_unexpected(exc: BaseException) -> None:
    """The type and the frames, not the message: an arbitrary exception's text (a database
    driver's, say) may quote the data it choked on."""
    frames = "".join(traceback.format_tb(exc.__traceback__))
    log.error("unhandled %s in API request\n%s", type(exc).__name__, frames)


class ContainUnexpected:
    """ASGI middleware: any unhandled exception becomes a bare 500 in our shape, logged safely."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def _send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, _send)
        except Exception as exc:
            log_unexpected(exc)
            if not started:  # otherwise the client sees a truncated response, nothing more
                response = error_response(500, "internal", "internal error; see the server log")
                await response(scope, receive, send)
