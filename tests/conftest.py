"""Shared fixtures: the real broker, the real databases, and unique ids per test."""

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine
from yarl import URL

from store.migrate import migrate
from store.settings import StoreSettings
from tests import infra
from tests.hop import Hop

# In-process code under test builds its own providers; they export nowhere unless a test
# gives them an exporter (an OTLP exporter aimed at the closed default port would hold every
# shutdown for its 3 s bound). Subprocesses get their environment from tests/processes.py.
for _signal in ("TRACES", "LOGS", "METRICS"):
    os.environ.setdefault(f"OTEL_{_signal}_EXPORTER", "none")
os.environ.setdefault("LOG_FORMAT", "console")


@pytest.fixture(scope="session")
def broker() -> Iterator[infra.Broker]:
    with infra.rabbitmq() as broker:
        yield broker


@pytest.fixture(scope="session")
def amqp_url(broker: infra.Broker) -> str:
    return broker.url


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    with infra.postgres() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
async def empty_store_settings(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[StoreSettings]:
    """Settings for a fresh, empty (not migrated) database: a SQLite file, or a throwaway
    PostgreSQL schema."""
    if request.param == "sqlite":
        yield StoreSettings(database_url=SecretStr(f"sqlite+aiosqlite:///{tmp_path}/test.db"))
        return
    url = request.getfixturevalue("postgres_url")
    schema = f"test_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(url)
    async with admin.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield StoreSettings(database_url=SecretStr(url), database_schema=schema)
    finally:
        async with admin.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await admin.dispose()


@pytest.fixture
async def store_settings(empty_store_settings: StoreSettings) -> StoreSettings:
    """A fresh database, migrated and seeded from store/seed.json as before any service starts."""
    await migrate(empty_store_settings)
    return empty_store_settings


@pytest.fixture
async def behind_a_hop(store_settings: StoreSettings) -> AsyncIterator[tuple[Hop, StoreSettings]]:
    """The test's PostgreSQL database behind a :class:`Hop`, and settings that go through it."""
    upstream = make_url(store_settings.database_url.get_secret_value())
    hop = Hop(upstream.host or "127.0.0.1", upstream.port or 5432)
    await hop.up()
    via = upstream.set(port=hop.port).render_as_string(hide_password=False)
    try:
        yield hop, store_settings.model_copy(update={"database_url": SecretStr(via)})
    finally:
        await hop.down()


@pytest.fixture
async def broker_behind_a_hop(amqp_url: str) -> AsyncIterator[tuple[Hop, str]]:
    """The test's RabbitMQ behind a :class:`Hop`, and an AMQP URL that goes through it."""
    upstream = URL(amqp_url)
    hop = Hop(upstream.host or "127.0.0.1", upstream.port or 5672)
    await hop.up()
    try:
        yield hop, str(upstream.with_port(hop.port))
    finally:
        await hop.down()


@pytest.fixture
def ref() -> str:
    """A unique suffix, so tests never depend on each other's data."""
    return uuid.uuid4().hex[:8]


# Fixtures that start real processes (end-to-end and reliability tests).
from tests.stack import api_port, database_env, make_system, receiver, system  # noqa: E402, F401
