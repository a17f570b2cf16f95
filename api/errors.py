"""Domain and infrastructure errors, translated to HTTP once, here at the edge.

Every error body is ``{"detail": ..., "trace_id": ...}``, an unexpected exception's 500 too
(with its ``X-Trace-Id`` header); no error is ever a bare 500 with a stack trace, and no message
carries a secret (connection URLs are never included).
"""

from collections.abc import Mapping
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from opentelemetry import trace
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException

from api.tracing import TRACE_ID_HEADER, current_trace_id
from messaging.rpc import BrokerUnavailable
from store.availability import database_gone
from store.engine import DatabaseUnavailable
from store.failures import causes, sqlstate

log = structlog.get_logger(__name__)
RETRY_AFTER_SECONDS = "1"


def error(
    status_code: int, detail: object, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"detail": jsonable_encoder(detail), "trace_id": current_trace_id()},
        status_code=status_code,
        headers=headers,
    )


async def _broker_unavailable(_: Request, exc: Exception) -> JSONResponse:
    span = trace.get_current_span()
    span.set_attribute("error.type", type(exc).__name__)
    # Why, in one line: the channel down, or the broker returned or refused the request (a
    # queue's max-length policy, say). A fault campaign's API answered 503 to every request,
    # for a refusal that outlived the policy, and said nothing.
    log.warning("broker unavailable: answered 503", reason=str(exc))
    return error(
        503,
        "The message broker is unavailable; the reservation was not taken. Retry shortly.",
        headers={"Retry-After": RETRY_AFTER_SECONDS},
    )


async def _database_unavailable(_: Request, exc: Exception) -> JSONResponse:
    """A 503 when the database, not the statement, failed. A reservation's statements all run
    before it publishes anything, so retrying one is safe; a top-up, a plain increment, may
    have committed when the connection was lost on its COMMIT."""
    if not database_gone(exc):
        raise exc  # a bug (an IntegrityError, say): the 500 of _unexpected
    trace.get_current_span().set_attribute("error.type", type(exc).__name__)
    # The driver's class and the SQLSTATE, never its message (which may quote a value): enough
    # to tell an outage from a standby, a lock timeout or a statement that always times out.
    innermost = list(causes(exc))[-1]
    log.warning(
        "database unavailable: answered 503", error=type(innermost).__name__, sqlstate=sqlstate(exc)
    )
    return error(
        503,
        "The database is unavailable. Retry shortly.",
        headers={"Retry-After": RETRY_AFTER_SECONDS},
    )


async def _validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # Keep the messages, drop the echoed input: it can be large or hostile.
    details = [
        {"loc": list(e.get("loc", ())), "msg": _message(e), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    return error(422, details)


def _message(error: Mapping[str, Any]) -> str:
    """The error's message; a body that is not JSON says what the parser found (it names a
    position or a repeated name, never a value)."""
    msg = str(error.get("msg", ""))
    found = (error.get("ctx") or {}).get("error")
    if error.get("type") == "json_invalid" and isinstance(found, str) and found:
        return f"{msg}: {found}"
    return msg


async def _http(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    headers = exc.headers
    if exc.status_code == 405 and headers and "HEAD" not in (allow := headers.get("Allow", "")):
        # Every GET answers HEAD too (api/limits.py), which routing does not know.
        methods = allow.split(", ")
        if "GET" in methods:
            headers = {**headers, "Allow": ", ".join([*methods, "HEAD"])}
    return error(exc.status_code, exc.detail, headers=headers)


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    """A bug, or a failure nothing above expected. Starlette's ``ServerErrorMiddleware`` calls
    this outside the app's middleware (so the trace-id header is added here, not by
    :class:`api.tracing.TraceIdHeaderMiddleware`) but inside the SERVER span, then re-raises
    ``exc``: the server logs the traceback, the span records the exception, and uvicorn closes
    the connection after this response, which says so (``Connection: close``) so that a client
    does not send its next request on it. The client gets the trace id, never the exception's
    text."""
    response = error(
        500, "Internal error: the request failed unexpectedly.", headers={"Connection": "close"}
    )
    if trace_id := current_trace_id():
        response.headers[TRACE_ID_HEADER.decode()] = trace_id
    return response


def install(app: FastAPI) -> None:
    app.add_exception_handler(BrokerUnavailable, _broker_unavailable)
    # The database down or refusing connections, a connection lost, or a pool with no
    # connection free in time: a 503, not a 500 (store.availability.database_gone).
    app.add_exception_handler(DBAPIError, _database_unavailable)
    app.add_exception_handler(PoolTimeout, _database_unavailable)
    app.add_exception_handler(DatabaseUnavailable, _database_unavailable)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)
