"""``/api/current-user/whoami``: who the token belongs to (Label Studio path); ``POST /api/users``: a new
user with its first API token.

Every user has the same rights here (there are no roles), so any token holder may create a user: the same
as handing out a token, but revocable per person. An existing e-mail is refused, so a token can never be
minted for someone else's account over the API (``python -m services.annotation_api.cli create-user``,
with database access, remains the operator's way to re-issue one).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from services.annotation_api.auth import service
from services.annotation_api.auth.dependencies import CurrentUser
from services.annotation_api.db import SessionDep
from services.annotation_api.routing import PrefixRouter

router = PrefixRouter(prefix="/api/current-user", tags=["users"])
users = PrefixRouter(prefix="/api/users", tags=["users"])


class UserOut(BaseModel):
    id: int = Field(description="User id (``completed_by`` / ``created_by`` elsewhere).")
    email: str = Field(description="The user's e-mail, unique.")


class UserCreate(BaseModel):
    model_config = ConfigDict(strict=True)

    email: str = Field(
        min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$", description="A new e-mail."
    )


class UserCreated(UserOut):
    token: str = Field(description="The user's API token (`Authorization: Token …`); shown only this once.")


@router.get("/whoami", response_model=UserOut)
@router.get("/whoami/", response_model=UserOut, include_in_schema=False)
async def whoami(user: CurrentUser) -> UserOut:
    return UserOut(id=user.id, email=user.email)


@users.post("", response_model=UserCreated, status_code=201)
@users.post("/", response_model=UserCreated, status_code=201, include_in_schema=False)
async def create_user(body: UserCreate, session: SessionDep, caller: CurrentUser) -> UserCreated:
    """A new user of the caller's organization and its API token; 400 on ``email`` if the user exists."""
    key = service.new_token_key()
    user = await service.create_user_with_token(session, body.email, key, caller.organization_id)
    return UserCreated(id=user.id, email=user.email, token=key)
