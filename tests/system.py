"""The API and the credit-check worker running in this process against the real broker and
database: the fixture behind the request/reply integration tests."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from api.app import create_app
from store.settings import StoreSettings
from workers.credit_check.__main__ import main as credit_check_main


def configure_env(
    monkeypatch: pytest.MonkeyPatch, amqp_url: str, store_settings: StoreSettings
) -> None:
    monkeypatch.setenv("AMQP_URL", amqp_url)
    monkeypatch.setenv("DATABASE_URL", store_settings.database_url.get_secret_value())
    if store_settings.database_schema:
        monkeypatch.setenv("DATABASE_SCHEMA", store_settings.database_schema)


@dataclass
class RunningWorker:
    stop: asyncio.Event
    task: "asyncio.Task[None]"

    async def close(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 15)


def start_worker() -> RunningWorker:
    stop = asyncio.Event()
    return RunningWorker(stop, asyncio.create_task(credit_check_main(stop)))


@contextlib.asynccontextmanager
async def running_api() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app()
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield client
