"""The API and the credit-check worker running in this process against the real broker and
database: the fixture behind the request/reply integration tests."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aio_pika
import httpx
import pytest
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from fastapi import FastAPI

from api.app import create_app
from devtools.vhosts import private_vhost
from messaging import topology
from messaging.connection import open_channel
from messaging.publisher import Publisher
from store.engine import dispose, open_engine
from store.repository import SqlStore
from store.settings import StoreSettings
from tests import infra
from tests.waiting import eventually_async
from workers.credit_check.__main__ import main as credit_check_main


def configure_env(
    monkeypatch: pytest.MonkeyPatch, amqp_url: str, store_settings: StoreSettings
) -> None:
    monkeypatch.setenv("AMQP_URL", amqp_url)
    monkeypatch.setenv("DATABASE_URL", store_settings.database_url.get_secret_value())
    if store_settings.database_schema:
        monkeypatch.setenv("DATABASE_SCHEMA", store_settings.database_schema)


@contextlib.asynccontextmanager
async def publishing_with_empty_dead_letters(amqp_url: str) -> AsyncIterator[topology.Declared]:
    """The topology, declared on a new connection's channel with publisher confirms, its
    dead-letter queue purged: for tests that publish straight to the exchange and read what
    was dead-lettered."""
    connection = await aio_pika.connect(amqp_url)
    try:
        declared = await topology.declare(await connection.channel(publisher_confirms=True))
        await declared.queues[topology.DEAD_LETTERS.name].purge()
        yield declared
    finally:
        await connection.close()


def vhost_tool(broker: infra.Broker) -> list[str]:
    """``rabbitmqctl``, for a vhost of a test's own; the test is skipped without it."""
    if broker.ctl is None:
        pytest.skip("a vhost of its own needs rabbitmqctl")
    return broker.ctl


@contextlib.asynccontextmanager
async def channel_of_its_own(amqp_url: str) -> AsyncIterator[AbstractChannel]:
    """A channel on a connection of its own, closed after: to look at or change the broker
    (as an operator would) apart from the channels under test."""
    connection = await aio_pika.connect(amqp_url)
    try:
        yield await connection.channel()
    finally:
        await connection.close()


@contextlib.asynccontextmanager
async def publishing_in_own_vhost(
    amqp_url: str, broker: infra.Broker, name: str
) -> AsyncIterator[tuple[AbstractRobustConnection, Publisher]]:
    """A robust connection to a new vhost with the topology declared, and a publisher on it
    as the services have: for a test that breaks the topology."""
    with private_vhost(amqp_url, vhost_tool(broker), name) as own_vhost:
        connection = await aio_pika.connect_robust(own_vhost)
        try:
            yield connection, Publisher.on(*await open_channel(connection))
        finally:
            await connection.close()


async def purge_work_queues(amqp_url: str) -> None:
    """Drop messages an earlier test left behind, so no worker processes them in this test."""
    connection = await aio_pika.connect(amqp_url)
    try:
        declared = await topology.declare(await connection.channel())
        for queue in declared.queues.values():
            await queue.purge()
    finally:
        await connection.close()


async def get_within(queue: AbstractQueue, seconds: float) -> AbstractIncomingMessage:
    """The next message on ``queue``, waiting at most ``seconds`` for one to arrive."""
    async for attempt in eventually_async(seconds, every=0.05):
        with attempt:
            message = await queue.get(fail=False)
            assert message is not None, f"nothing in {queue.name} yet"
    assert message is not None
    return message


async def consumers_and_messages(
    channel: AbstractChannel, spec: topology.QueueSpec
) -> tuple[int, int]:
    """How many consume ``spec``'s queue, and how many messages are ready in it. ``channel``
    is not a robust one, which would keep each declaration to restore them all."""
    declared = await channel.declare_queue(spec.name, durable=True, arguments=dict(spec.arguments))
    result = declared.declaration_result
    return result.consumer_count or 0, result.message_count or 0


async def until_consuming(channel: AbstractChannel, spec: topology.QueueSpec) -> None:
    """Once one consumer (a worker started in the test) consumes ``spec``'s queue."""
    async for attempt in eventually_async(15, every=0.1):
        with attempt:
            assert (await consumers_and_messages(channel, spec))[0] == 1


@dataclass
class RecordingPublishers:
    """A worker's publisher factory (``serve(..., publisher=...)``) that keeps what it made."""

    channels: list[AbstractChannel] = field(default_factory=list)
    made: list[Publisher] = field(default_factory=list)

    def __call__(self, channel: AbstractChannel, declared: topology.Declared) -> Publisher:
        self.channels.append(channel)
        self.made.append(Publisher.on(channel, declared))
        return self.made[-1]


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
async def running_api(
    app: FastAPI | None = None, *, raise_app_exceptions: bool = True
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of ``app`` (a new one unless given, to reach its ``state``), in its lifespan.
    ``raise_app_exceptions=False`` lets through what the app re-raises after answering (a
    500's exception, for the server to log)."""
    app = app or create_app()
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield client


async def credits_of(store_settings: StoreSettings, username: str = "alice") -> int | None:
    """A user's credits, read on an engine of its own (a worker in the test holds another)."""
    engine = await open_engine(store_settings)
    try:
        return await SqlStore(engine).get_credits(username)
    finally:
        await dispose(engine)
