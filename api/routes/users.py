"""Users, their credits and the item catalogue, read from the store the worker writes."""

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path

from api.deps import StoreDep
from api.schemas import Catalogue, ErrorBody, TopUp, UserView
from api.strict_json import StrictJsonRoute
from api.tracing import current_trace_id
from domain.credits import CreditLimitExceeded
from domain.identifiers import IDENTIFIER_PATTERN

router = APIRouter(tags=["users"], route_class=StrictJsonRoute)

UsernamePath = Annotated[str, Path(pattern=IDENTIFIER_PATTERN)]


@router.get("/users")
async def list_users(store: StoreDep) -> Catalogue:
    """Every user's credits and every item's price."""
    return Catalogue(
        users={b.username: b.credits for b in await store.list_users()},
        items={i.item_id: i.price for i in await store.list_items()},
        trace_id=current_trace_id(),
    )


@router.get("/users/{username}", responses={404: {"model": ErrorBody}})
async def get_user(username: UsernamePath, store: StoreDep) -> UserView:
    """A user's current credits."""
    credits = await store.get_credits(username)
    if credits is None:
        raise HTTPException(404, f"unknown user {username!r}")
    return UserView(username=username, credits=credits, trace_id=current_trace_id())


@router.post(
    "/users/{username}/credits", responses={404: {"model": ErrorBody}, 409: {"model": ErrorBody}}
)
async def top_up(username: UsernamePath, body: TopUp, store: StoreDep) -> UserView:
    """Add credits, so a user can retry after a rejection (a playground convenience: a real
    system would put this behind authentication)."""
    try:
        credits = await store.add_credits(username, body.amount)
    except CreditLimitExceeded as exc:
        raise HTTPException(409, str(exc)) from None
    if credits is None:
        raise HTTPException(404, f"unknown user {username!r}")
    return UserView(username=username, credits=credits, trace_id=current_trace_id())
