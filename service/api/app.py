"""``create_app(settings)``: the REST API, built from a settings object and nothing global.

Importing this module builds nothing: no engine, no settings, no keys. ``deidgate serve`` (and
tests) build a Settings once, migrate the database, and call ``create_app``. Everything lives
under ``/api/v1``; the interactive OpenAPI documentation is at ``/docs``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from service.api import errors, openapi, transport
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
    app.mount("/metrics", metrics_endpoint(settings))
    transport.install(app, settings)  # outermost: plain HTTP refused outside development
    return app


def metrics_endpoint(settings: Settings) -> Any:
    """``/metrics``: every process's samples of this host (multiprocess files in
    ``HOME/metrics``) and the broker's queue depths read at scrape time. No token: nothing in
    it is PHI (fixed label vocabularies), and Prometheus scrapes without one; HTTPS applies."""
    from service.core import metrics
    from service.core.queues import broker_options, deid_queue, queue_names

    metrics.metrics_dir(settings).mkdir(parents=True, exist_ok=True, mode=0o700)
    nodes = [n.strip() for n in settings.metrics_nodes.split(",") if n.strip()]
    queues = list(dict.fromkeys([*queue_names(settings), *(deid_queue(settings, n)
                                                           for n in nodes)]))

    def depths() -> dict[str, int]:
        url, options = broker_options(settings)
        return metrics.broker_queue_depths(url, options, queues)

    registry = metrics.scrape_registry(settings, collectors=[metrics.QueueDepths(depths)])
    return metrics.metrics_app(registry)
