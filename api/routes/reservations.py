"""Reservations: publish the request, await the worker's reply, answer in HTTP terms."""

import uuid
from functools import partial
from typing import Annotated

import structlog
from fastapi import APIRouter, HTTPException, Path, Request
from fastapi.responses import JSONResponse, Response
from opentelemetry import trace

from api import idempotency
from api.deps import StoreDep, rpc_of, settings_of, store_of
from api.http_protocol import answer_if_cut_short
from api.schemas import (
    ErrorBody,
    ReservationConfirmedBody,
    ReservationNotFoundBody,
    ReservationPendingBody,
    ReservationRejectedBody,
    ReservationRequest,
    ReservationView,
)
from api.strict_json import StrictJsonRoute
from api.tracing import TRACE_ID_HEADER, current_trace_id
from domain.reservations import Outcome
from messaging.messages import CreditChecked, InvalidMessage, ReservationRequested
from messaging.rpc import ReplyTimeout
from messaging.topology import RESERVATION_REQUESTS

router = APIRouter(tags=["reservations"], route_class=StrictJsonRoute)
log = structlog.get_logger(__name__)

IDEMPOTENCY_KEY_HELP = (
    "Optional. A retry with the same key and body gets the first request's reservation and is "
    "never charged again (a different body: 422). Scoped to this endpoint; at most 255 "
    "printable ASCII characters, e.g. a quoted UUID; kept for IDEMPOTENCY_KEY_TTL (24 h)."
)

# The header as FastAPI would document a Header() parameter; the route reads it itself.
_IDEMPOTENCY_KEY_PARAMETER = {
    "name": idempotency.HEADER,
    "in": "header",
    "required": False,
    "description": IDEMPOTENCY_KEY_HELP,
    "schema": {"type": "string", "title": idempotency.HEADER, "description": IDEMPOTENCY_KEY_HELP},
}

_NOT_FOUND = {
    Outcome.UNKNOWN_USER: "unknown user {username!r}",
    Outcome.UNKNOWN_ITEM: "unknown item {item_id!r}",
}


@router.post(
    "/reservations",
    status_code=201,
    responses={
        201: {
            "model": ReservationConfirmedBody,
            "description": "Reserved: the price is deducted; Location is the reservation",
        },
        202: {"model": ReservationPendingBody, "description": "No reply in time; poll Location"},
        400: {"model": ErrorBody, "description": "Malformed Idempotency-Key"},
        404: {"model": ReservationNotFoundBody, "description": "Unknown user or item"},
        409: {"model": ReservationRejectedBody, "description": "Not enough credits"},
        503: {"model": ErrorBody, "description": "The broker is unavailable"},
    },
    openapi_extra={"parameters": [_IDEMPOTENCY_KEY_PARAMETER]},
)
async def create_reservation(body: ReservationRequest, http_request: Request) -> Response:
    """Reserve an item: the credit-check worker deducts its price from the user's credits."""
    # The hot route reads its three objects and the header directly, and renders its answer
    # once: FastAPI's dependency solving and response-model pass cost more than they do here.
    rpc, store = rpc_of(http_request), store_of(http_request)
    settings = settings_of(http_request)
    idempotency_key = idempotency.raw_key(http_request.headers)
    span = trace.get_current_span()
    reservation_id = uuid.uuid4()
    if idempotency_key is not None:
        reservation_id = await idempotency.reservation_id_for(
            store, idempotency_key, body, settings.idempotency_key_ttl
        )
    request = ReservationRequested(
        reservation_id=reservation_id, username=body.username, item_id=body.item_id
    )
    span.set_attribute("reservation.id", str(request.reservation_id))
    if idempotency_key is not None and (stored := await store.get_reservation(reservation_id)):
        # A retry of a decided request: its answer, charged once.
        span.set_attribute("reservation.replayed", True)
        stored_reply = CreditChecked(
            reservation_id=reservation_id,
            outcome=stored.outcome,
            credits_left=stored.credits_left,
            price=stored.price,
        )
        return _answer(stored_reply, request)
    # Once the request is out it may be queued: cut short by the shutdown, it is pending (202),
    # not a 503 that a client without an Idempotency-Key would retry into a second reservation.
    trace_id = current_trace_id()
    cut_short = partial(_pending, request, trace_id, trace_id_header=True)
    sent = partial(answer_if_cut_short, http_request, cut_short)
    try:
        reply = await rpc.call(request, CreditChecked, to=RESERVATION_REQUESTS, may_be_queued=sent)
    except ReplyTimeout as exc:  # queued, or will be (RequestUnconfirmed: being republished)
        span.add_event(
            "reservation.reply_timeout",
            {"timeout_s": settings.reservation_reply_timeout, "reason": type(exc).__name__},
        )
        span.set_attribute("reservation.outcome", "pending")
        return _pending(request, trace_id)
    except InvalidMessage as exc:
        # The worker answered, so the outcome is recorded; it is just unreadable here (a
        # version this API does not know yet, mid-deploy): the client polls Location.
        log.warning("unreadable reply; answering pending", reason=str(exc))
        span.set_attribute("reservation.outcome", "pending")
        return _pending(request, trace_id)
    span.set_attribute("reservation.outcome", reply.outcome.value)
    return _answer(reply, request)


def _answer(reply: CreditChecked, request: ReservationRequested) -> Response:
    trace_id = current_trace_id()
    if reply.outcome is Outcome.CONFIRMED and reply.credits_left is not None:
        confirmed = ReservationConfirmedBody(
            reservation_id=reply.reservation_id,
            status=reply.outcome.value,
            credits_left=reply.credits_left,
            trace_id=trace_id,
        )
        return Response(
            confirmed.model_dump_json(),
            201,
            headers={"Location": f"/reservations/{reply.reservation_id}"},
            media_type="application/json",
        )
    if reply.outcome is Outcome.REJECTED_INSUFFICIENT_CREDITS:
        reason = f"not enough credits: the item costs {reply.price}, {reply.credits_left} left"
        body = ReservationRejectedBody(
            reservation_id=reply.reservation_id,
            status=reply.outcome.value,
            reason=reason,
            trace_id=trace_id,
        )
        return JSONResponse(body.model_dump(mode="json"), status_code=409)
    detail = _NOT_FOUND.get(reply.outcome, "reservation failed").format(
        username=request.username, item_id=request.item_id
    )
    not_found = ReservationNotFoundBody(
        detail=detail,
        reservation_id=reply.reservation_id,
        status=reply.outcome.value,
        trace_id=trace_id,
    )
    return JSONResponse(not_found.model_dump(mode="json"), status_code=404)


def _pending(
    request: ReservationRequested, trace_id: str | None, *, trace_id_header: bool = False
) -> JSONResponse:
    """202 and where to poll. ``trace_id_header`` for an answer sent outside the app's
    middleware (a request the shutdown cut short), which otherwise adds ``X-Trace-Id``."""
    headers = {"Location": f"/reservations/{request.reservation_id}"}
    if trace_id_header and trace_id:
        headers[TRACE_ID_HEADER.decode()] = trace_id
    body = ReservationPendingBody(reservation_id=request.reservation_id, trace_id=trace_id)
    return JSONResponse(body.model_dump(mode="json"), status_code=202, headers=headers)


@router.get("/reservations/{reservation_id}", responses={404: {"model": ErrorBody}})
async def get_reservation(
    reservation_id: Annotated[uuid.UUID, Path()], store: StoreDep
) -> ReservationView:
    """A reservation's final state, from any API replica (404 until a worker has recorded it)."""
    reservation = await store.get_reservation(reservation_id)
    if reservation is None:
        raise HTTPException(404, "unknown reservation, or not processed yet: retry shortly")
    token = reservation.download_token
    return ReservationView(
        reservation_id=reservation.reservation_id,
        status=reservation.outcome.value,
        item_id=reservation.item_id,
        price=reservation.price,
        credits_left=reservation.credits_left,
        download_url=f"/downloads/{token}" if token and reservation.ready_at else None,
        trace_id=reservation.trace_id,
        request_trace_id=current_trace_id(),
    )
