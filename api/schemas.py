"""HTTP request and response bodies, every one of them (the messages on the broker live in
messaging.messages)."""

from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from domain.credits import MAX_TOP_UP
from domain.identifiers import Identifier


class ReservationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    username: Identifier
    item_id: Identifier


class ReservationConfirmedBody(BaseModel):
    reservation_id: UUID
    status: str
    credits_left: int
    trace_id: str | None


class ReservationRejectedBody(BaseModel):
    reservation_id: UUID
    status: str
    reason: str
    trace_id: str | None


class ReservationNotFoundBody(BaseModel):
    """The worker's answer for an unknown user or item: recorded under its reservation id."""

    detail: str
    reservation_id: UUID
    status: str
    trace_id: str | None


class ReservationPendingBody(BaseModel):
    reservation_id: UUID
    status: str = "pending"
    trace_id: str | None


class ReservationView(BaseModel):
    reservation_id: UUID
    status: str
    item_id: str
    price: int | None
    credits_left: int | None
    download_url: str | None
    # The trace of the request that created the reservation (None if it was not traced) ...
    trace_id: str | None
    # ... and the trace of this GET.
    request_trace_id: str | None


class UserView(BaseModel):
    username: str
    credits: int
    trace_id: str | None


class TopUp(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    amount: int = Field(gt=0, le=MAX_TOP_UP, strict=True)  # JSON true or "5" is not an amount


class Catalogue(BaseModel):
    users: dict[str, int]
    items: dict[str, int]
    trace_id: str | None


class DownloadView(BaseModel):
    reservation_id: str
    item_id: str
    content: str
    trace_id: str | None


class ErrorBody(BaseModel):
    detail: str
    trace_id: str | None
