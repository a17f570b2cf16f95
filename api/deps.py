"""Dependencies for routes, as ``Annotated`` aliases. The lifespan puts the objects on
``app.state``; routes never reach for globals.

They are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency in the thread
pool, a thread hop (and a lock handshake) per dependency per request for a mere attribute
read."""

from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

from aio_pika import RobustConnection
from aio_pika.abc import AbstractRobustConnection
from fastapi import Depends, Request

from api.settings import ApiSettings
from messaging.rpc import RpcClient
from store.repository import SqlStore

T = TypeVar("T")


def _from_state(name: str, kind: type[T]) -> Callable[[Request], Awaitable[T]]:
    """A dependency that returns ``app.state.<name>``, checked to be a ``kind``."""

    async def dependency(request: Request) -> T:
        value = getattr(request.app.state, name)
        assert isinstance(value, kind), f"app.state.{name} is not a {kind.__name__}"
        return value

    dependency.__name__ = f"get_{name}"
    return dependency


get_settings = _from_state("settings", ApiSettings)
get_rpc = _from_state("rpc", RpcClient)
get_store = _from_state("store", SqlStore)
get_connection = _from_state("connection", RobustConnection)

SettingsDep = Annotated[ApiSettings, Depends(get_settings)]
RpcDep = Annotated[RpcClient, Depends(get_rpc)]
StoreDep = Annotated[SqlStore, Depends(get_store)]
ConnectionDep = Annotated[AbstractRobustConnection, Depends(get_connection)]
