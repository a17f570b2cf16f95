"""Liveness and readiness."""

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import ConnectionDep, RpcDep
from messaging.connection import is_up

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


NOT_READY = (
    "The broker connection is down, or the channel requests go out on is closed, or the broker "
    "has not confirmed a request within its deadline (it blocks publishers in a memory or disk "
    "alarm, or stopped answering)"
)


@router.get("/readyz", responses={503: {"description": NOT_READY}})
async def readyz(connection: ConnectionDep, rpc: RpcDep) -> JSONResponse:
    """Ready only while the broker connection and the request channel are up and the broker
    confirms requests.

    A broker that blocks publishers keeps the connection open, so the connection's state alone
    cannot tell; a request it did not confirm within the call's deadline (a 202) is held by
    the republisher until a copy is confirmed, and while any is, this process is not ready."""
    if not is_up(connection):
        return JSONResponse({"status": "not ready", "broker": "down"}, status_code=503)
    if not rpc.channel_open:  # reopening, or closed for good: every POST would answer 503
        return JSONResponse({"status": "not ready", "broker": "channel closed"}, status_code=503)
    if unconfirmed := rpc.republisher.in_progress:
        body = {"status": "not ready", "broker": "not confirming", "unconfirmed": unconfirmed}
        return JSONResponse(body, status_code=503)
    return JSONResponse({"status": "ready", "broker": "up"})
