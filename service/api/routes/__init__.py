"""Every router of /api/v1, in the order they appear in /docs."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.routes import admin, audit, auth, health, jobs, triage

ROUTERS: list[APIRouter] = [
    health.router,
    auth.router,
    jobs.router,
    triage.router,
    admin.router,
    audit.router,
]
