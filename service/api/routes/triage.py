"""The triage worklist: de-identified exams ranked by model score, most suspicious first.

Roles: staff (the screening readers it is for) and admin. Auditors and services are refused:
neither needs clinical prioritisation, and least privilege keeps the list where it is read.
The worklist holds pseudonyms only; the scoring worker fills ``triage_entries``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from sqlalchemy import func, select

from service.api.deps import SessionDep, require_role
from service.api.schemas import Category, Worklist, WorklistItem
from service.core.security import Principal, Role
from service.db.models.triage import TriageEntry

router = APIRouter(prefix="/triage", tags=["triage"])

Reader = Annotated[Principal, Depends(require_role(Role.staff, Role.admin))]


@router.get("/worklist", response_model=Worklist, summary="Exams ranked by triage score")
def worklist(
    session: SessionDep,
    _: Reader,
    category: Annotated[Category | None, Query(description="only this category")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**63 - 1, description="entries to skip")] = 0,
) -> Worklist:
    """Highest score first; equal scores by who has waited longest (earliest scored), then
    by row id so pages never overlap or skip."""
    where = [] if category is None else [TriageEntry.category == category]
    total = session.scalar(select(func.count()).select_from(TriageEntry).where(*where)) or 0
    rows = session.scalars(
        select(TriageEntry)
        .where(*where)
        .order_by(TriageEntry.score.desc(), TriageEntry.scored_at.asc(), TriageEntry.id.asc())
        .limit(limit)
        .offset(offset)
    )
    items = [
        WorklistItem(
            rank=offset + i + 1,
            exam=r.exam,
            patient_pseudonym=r.patient_pseudonym,
            score=r.score,
            category=r.category,  # type: ignore[arg-type]
            model_version=r.model_version,
            scored_at=r.scored_at,
        )
        for i, r in enumerate(rows)
    ]
    return Worklist(total=total, limit=limit, offset=offset, items=items)
