"""Dependencies for routes, as ``Annotated`` aliases. The lifespan puts the objects on
``app.state``; routes never reach for globals.

They are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency in the thread
pool, a thread hop (and a lock handshake) per dependency per request for a mere attribute
read."""

from typing import Annotated

from aio_pika.abc import AbstractRobustConnection
from fastapi import Depends, Request

from api.settings import ApiSettings
from messaging.rpc import RpcClient
from store.repository import SqlStore


async def get_settings(request: Request) -> ApiSettings:
    settings: ApiSettings = request.app.state.settings
    return settings


async def get_rpc(request: Request) -> RpcClient:
    rpc: RpcClient = request.app.state.rpc
    return rpc


async def get_store(request: Request) -> SqlStore:
    store: SqlStore = request.app.state.store
    return store


async def get_connection(request: Request) -> AbstractRobustConnection:
    connection: AbstractRobustConnection = request.app.state.connection
    return connection


SettingsDep = Annotated[ApiSettings, Depends(get_settings)]
RpcDep = Annotated[RpcClient, Depends(get_rpc)]
StoreDep = Annotated[SqlStore, Depends(get_store)]
ConnectionDep = Annotated[AbstractRobustConnection, Depends(get_connection)]
