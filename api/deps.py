"""What routes get from the composition root: the objects the lifespan put on ``app.state``.
Routes never reach for globals.

Two forms of each, reading the same attribute, checked to be of the right kind:

- ``…Dep``, an ``Annotated`` alias for a route parameter (FastAPI's dependency injection). The
  dependencies are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency in the
  thread pool, a thread hop (and a lock handshake) per dependency per request for a mere
  attribute read;
- ``…_of(request)``, a plain function, for the hot route (``POST /reservations``): solving a
  dependency costs FastAPI more than the read itself (three of them: ~26 µs of a request's
  ~100 µs of FastAPI request handling, measured in-process), and that route's are always the
  same three objects.
"""

from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

from aio_pika import RobustConnection
from aio_pika.abc import AbstractRobustConnection
from fastapi import Depends, Request

from api.settings import ApiSettings
from messaging.rpc import RpcClient
from store.repository import SqlStore

T = TypeVar("T")


def _from_state(name: str, kind: type[T]) -> Callable[[Request], T]:
    """A reader of ``app.state.<name>``, checked to be a ``kind``."""

    def read(request: Request) -> T:
        value = getattr(request.app.state, name)
        assert isinstance(value, kind), f"app.state.{name} is not a {kind.__name__}"
        return value

    read.__name__ = f"{name}_of"
    return read


def _dependency(read: Callable[[Request], T]) -> Callable[[Request], Awaitable[T]]:
    async def dependency(request: Request) -> T:
        return read(request)

    dependency.__name__ = f"get_{read.__name__.removesuffix('_of')}"
    return dependency


settings_of = _from_state("settings", ApiSettings)
rpc_of = _from_state("rpc", RpcClient)
store_of = _from_state("store", SqlStore)
connection_of = _from_state("connection", RobustConnection)

StoreDep = Annotated[SqlStore, Depends(_dependency(store_of))]
ConnectionDep = Annotated[AbstractRobustConnection, Depends(_dependency(connection_of))]
RpcDep = Annotated[RpcClient, Depends(_dependency(rpc_of))]
