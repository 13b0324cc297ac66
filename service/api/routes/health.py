"""Liveness and database reachability: the one endpoint that needs no token.

It says only whether the service and its database answer, so load balancers and
``docker-compose`` health checks can use it without holding a credential.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Literal

from fastapi import APIRouter, Request, Response
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
