"""``/auth/me``: lets any token holder check which name and role the API sees for it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from service.api.deps import require_role
from service.api.schemas import WhoAmI
from service.core.security import Principal, Role

router = APIRouter(prefix="/auth", tags=["auth"])

AnyRole = Annotated[Principal, Depends(require_role(*Role))]


@router.get("/me", response_model=WhoAmI, summary="The calling token's name and role")
def me(who: AnyRole) -> WhoAmI:
    """Every role: it reveals only what the caller's own token already is."""
    return WhoAmI(name=who.name, role=who.role, prefix=f"dgt_{who.prefix}")
