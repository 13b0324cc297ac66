"""Liveness and database reachability: the one endpoint that needs no token.

It says only whether the service and its database answer, so load balancers and
``docker-compose`` health checks can use it without holding a credential.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from service.api.schemas import Health
from service.db.session import get_engine

router = APIRouter(tags=["health"])


def app_version() -> str:
    try:
        return version("deidgate")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0+source"


@router.get(
    "/health", response_model=Health, summary="Service and database status (public)",
    responses={503: {"model": Health, "description": "the database does not answer"}},
)
def health(request: Request, response: Response) -> Health:
    db: Literal["ok", "unreachable"]
    try:
        with get_engine(request.app.state.settings.db_url).connect() as conn:
            conn.execute(text("SELECT 1"))
        db = "ok"
    except SQLAlchemyError:
        db = "unreachable"
        response.status_code = 503
    return Health(
        status="ok" if db == "ok" else "degraded", database=db, version=app_version()
    )


@router.get(
    "/ready", summary="Readiness: database migrated, broker, spool free space, model (public)",
    responses={200: {"description": "every check passed"},
               503: {"description": "a check failed; the body names it and why (a code)"}},
)
def ready(request: Request) -> JSONResponse:
    """What a load balancer or orchestrator asks before sending work: each check returns a
    code (``ok``, ``unreachable``, ``not-migrated``, ``low-space``, ``missing``, ``stale``...)
    and numbers, never an exception's text."""
    from service.core import health as checks
    from service.core.queues import broker_options
    from service.db.migrate import script_heads

    settings = request.app.state.settings
    # the migration scripts are this process's own code: parsed once, not on every probe
    heads = getattr(request.app.state, "script_heads", None)
    if heads is None:
        heads = request.app.state.script_heads = script_heads(settings.db_url)
    url, options = broker_options(settings)
    ok, body = checks.readiness([
        checks.check_database(get_engine(settings.db_url), expected_heads=heads),
        checks.check_broker(url, options),
        checks.check_spool(settings.spool_dir, floor_bytes=settings.spool_free_floor_mb << 20),
        checks.check_model(checks.model_status_path(settings),
                           required=settings.ready_requires_model),
    ])
    return JSONResponse(body, status_code=200 if ok else 503)
