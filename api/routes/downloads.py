"""Downloads prepared by the fulfilment worker."""

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path

from api.deps import StoreDep
from api.schemas import DownloadView, ErrorBody
from api.tracing import current_trace_id

router = APIRouter(tags=["downloads"])


@router.get("/downloads/{token}", responses={404: {"model": ErrorBody}})
async def get_download(
    token: Annotated[str, Path(pattern=r"^[A-Za-z0-9_\-]{16,64}$")], store: StoreDep
) -> DownloadView:
    """The item behind a download link (a stand-in for the real file)."""
    reservation = await store.find_download(token)
    if reservation is None:
        raise HTTPException(404, "unknown download link")
    return DownloadView(
        reservation_id=str(reservation.reservation_id),
        item_id=reservation.item_id,
        content=f"Here is your {reservation.item_id}. Enjoy!",
        trace_id=current_trace_id(),
    )
