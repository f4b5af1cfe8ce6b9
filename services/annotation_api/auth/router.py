"""``/api/current-user/whoami``: who the token belongs to (Label Studio path)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from services.annotation_api.auth.dependencies import CurrentUser

router = APIRouter(prefix="/api/current-user", tags=["users"])


class UserOut(BaseModel):
    id: int
    email: str


@router.get("/whoami", response_model=UserOut)
@router.get("/whoami/", response_model=UserOut, include_in_schema=False)
async def whoami(user: CurrentUser) -> UserOut:
    return UserOut(id=user.id, email=user.email)
