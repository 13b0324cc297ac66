"""``mount(app, settings)``: the web UI in the API's app (same process, same roles).

UI routes are left out of the OpenAPI document (``include_in_schema=False``); that flag is also
how the API's and the UI's role-matrix tests tell the two apart.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from service.core.config import Settings
from service.web.deps import SignInNeeded, WebForbidden
from service.web.render import HERE, is_htmx, page
from service.web.routes import ROUTERS
from service.web.security import SecurityHeaders


def mount(app: FastAPI, settings: Settings) -> None:
    app.add_middleware(SecurityHeaders, production=settings.environment != "development")
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    for router in ROUTERS:
        app.include_router(router)

    @app.exception_handler(SignInNeeded)
    async def _sign_in(request: Request, _: SignInNeeded) -> Response:
        if is_htmx(request):  # htmx follows this header with a full page load
            return Response(status_code=401, headers={"HX-Redirect": "/login"})
        return RedirectResponse("/login", status_code=303)

    @app.exception_handler(WebForbidden)
    async def _forbidden(request: Request, exc: WebForbidden) -> HTMLResponse:
        template = "_error.html" if is_htmx(request) else "error.html"
        title = "Not found" if exc.status == 404 else "Refused"
        return page(request, template, title=title, status=exc.status, message=exc.message)
