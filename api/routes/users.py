"""Users and their credits, read from the store the worker writes."""

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path

from api.deps import StoreDep
from api.schemas import ErrorBody, UserView
from api.tracing import current_trace_id

router = APIRouter(tags=["users"])

UsernamePath = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")]


@router.get("/users/{username}", responses={404: {"model": ErrorBody}})
async def get_user(username: UsernamePath, store: StoreDep) -> UserView:
    """A user's current credits."""
    credits = await store.get_credits(username)
    if credits is None:
        raise HTTPException(404, f"unknown user {username!r}")
    return UserView(username=username, credits=credits, trace_id=current_trace_id())
