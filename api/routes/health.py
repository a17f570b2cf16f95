"""Liveness and readiness."""

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import ConnectionDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "The broker connection is down"}})
async def readyz(connection: ConnectionDep) -> JSONResponse:
    """Ready only while the broker connection is up."""
    if connection.is_closed or not connection.connected.is_set():
        return JSONResponse({"status": "not ready", "broker": "down"}, status_code=503)
    return JSONResponse({"status": "ready", "broker": "up"})
