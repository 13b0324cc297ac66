"""Every router of the web UI; all are left out of the OpenAPI document."""

from __future__ import annotations

from fastapi import APIRouter

from service.web.routes import admin, audit, auth, jobs, worklist

ROUTERS: list[APIRouter] = [auth.router, jobs.router, admin.router, audit.router,
                            worklist.router]
