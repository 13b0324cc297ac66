"""``create_app(settings)``: the REST API, built from a settings object and nothing global.

Importing this module builds nothing: no engine, no settings, no keys. ``deidgate serve`` (and
tests) build a Settings once, migrate the database, and call ``create_app``. Everything lives
under ``/api/v1``; the interactive OpenAPI documentation is at ``/docs``.
"""

from __future__ import annotations

from fastapi import FastAPI

from service.api import errors, openapi
from service.api.routes import ROUTERS
from service.api.routes.health import app_version
from service.core import logs
from service.core.config import Settings
from service.web.app import mount as mount_web

API_PREFIX = "/api/v1"


def create_app(settings: Settings) -> FastAPI:
    logs.protect_all()  # the PHI filters on whatever handlers this process has (uvicorn's too)
    app = FastAPI(
        title="deidgate",
        summary="DICOM de-identification and extraction gateway for breast-cancer screening",
        description=(
            "Authenticate with `Authorization: Bearer <token>`; tokens come from "
            "`deidgate token create --role admin|staff|auditor|service` and are shown once. "
            "Every error has the body `{\"error\": {\"code\": ..., \"message\": ...}}`. "
            "Each operation lists every status it can answer; a method a path does not have "
            "is answered 405 with an `Allow` header naming the ones it has. Timestamps are "
            "RFC 3339 in UTC. "
            "No URL carries PHI: paths take job ids and pseudonyms only."
        ),
        version=app_version(),
        docs_url="/docs",
        redoc_url=None,
        openapi_url=f"{API_PREFIX}/openapi.json",
    )
    app.state.settings = settings
    app.state.keys = None  # loaded on first use by routes that need them
    errors.install(app)
    openapi.install(app)
    for router in ROUTERS:
        app.include_router(router, prefix=API_PREFIX)
    mount_web(app, settings)  # the web UI at / (service.web), outside the OpenAPI document
    return app
