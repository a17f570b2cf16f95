"""HTTP request and response bodies (the messages on the broker live in messaging.messages)."""

from uuid import UUID

from pydantic import BaseModel, ConfigDict

from domain.identifiers import Identifier


class ReservationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    username: Identifier
    item_id: Identifier


class ReservationConfirmedBody(BaseModel):
    reservation_id: UUID
    status: str
    credits_left: int
    trace_id: str


class ReservationRejectedBody(BaseModel):
    reservation_id: UUID
    status: str
    reason: str
    trace_id: str


class ReservationPendingBody(BaseModel):
    reservation_id: UUID
    status: str = "pending"
    trace_id: str


class ReservationView(BaseModel):
    reservation_id: UUID
    status: str
    item_id: str
    price: int | None
    credits_left: int | None
    download_url: str | None
    trace_id: str


class UserView(BaseModel):
    username: str
    credits: int
    trace_id: str


class ErrorBody(BaseModel):
    detail: str
    trace_id: str
