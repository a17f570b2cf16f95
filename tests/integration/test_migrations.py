"""The one-shot migrate step on real SQLite and PostgreSQL: it creates exactly the tables the
code describes, and a service started before it fails with one line that names the fix."""

import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from pydantic import SecretStr
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from store.engine import (
    DatabaseUnreachable,
    SchemaNotReady,
    check_ready,
    create_engine,
    open_engine,
)
from store.migrate import MigrationFailed, migrate
from store.repository import SqlStore
from store.revisions import head_revision
from store.settings import StoreSettings
from store.tables import metadata
from tests import infra, processes

pytestmark = pytest.mark.integration
FIX = "run `reservations migrate`"


def _differences(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, metadata))


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


async def test_the_migrations_create_exactly_the_tables_the_code_describes(
    store_settings: StoreSettings,
) -> None:
    engine = create_engine(store_settings)
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(_differences) == []
            tables = await conn.run_sync(_tables)
            version = await conn.execute(text("SELECT version_num FROM alembic_version"))
            assert [row[0] for row in version] == [head_revision()]
    finally:
        await engine.dispose()
    assert tables == {"alembic_version", "users", "items", "reservations", "idempotency_keys"}


async def test_migrating_twice_changes_nothing(store_settings: StoreSettings) -> None:
    await migrate(store_settings)
    engine = await open_engine(store_settings)
    try:
        assert await SqlStore(engine).get_credits("alice") == 100
    finally:
        await engine.dispose()


async def test_a_service_on_a_database_never_migrated_names_the_fix(
    empty_store_settings: StoreSettings,
) -> None:
    with pytest.raises(SchemaNotReady) as raised:
        await open_engine(empty_store_settings)
    message = str(raised.value)
    assert "tables have not been created" in message and FIX in message, message
    assert "\n" not in message


@pytest.mark.parametrize("empty_store_settings", ["postgres"], indirect=True)
async def test_a_start_up_check_held_by_a_lock_gives_up_within_the_transaction_timeout(
    store_settings: StoreSettings,
) -> None:
    """Another session holds a lock on ``alembic_version`` (a migration under way, an
    operator's ``LOCK TABLE``): the check read it and waited, the service silent, for as long
    as the lock lasted (a review's 40 s; for ever, a lock never released)."""
    settings = store_settings.model_copy(update={"database_transaction_timeout": 1.0})
    url, schema = settings.database_url.get_secret_value(), settings.database_schema
    holder = create_async_engine(url, connect_args={"server_settings": {"search_path": schema}})
    try:
        async with holder.begin() as conn:
            await conn.execute(text("LOCK TABLE alembic_version IN ACCESS EXCLUSIVE MODE"))
            started = time.monotonic()
            with pytest.raises(DatabaseUnreachable) as raised:
                await check_ready(settings)
            waited = time.monotonic() - started
    finally:
        await holder.dispose()
    message = str(raised.value)
    assert "did not answer the start-up check within 1 s" in message, message
    assert "DATABASE_TRANSACTION_TIMEOUT" in message and "\n" not in message
    assert waited < 10, waited  # the timeout and the engine's disposal, not the lock
    await check_ready(settings)  # the lock released: ready


@pytest.fixture
async def missing_schema(postgres_url: str) -> AsyncIterator[StoreSettings]:
    """PostgreSQL settings naming a schema that does not exist (dropped afterwards if made)."""
    schema = f"test_missing_{uuid.uuid4().hex[:12]}"
    yield StoreSettings(database_url=SecretStr(postgres_url), database_schema=schema)
    admin = create_async_engine(postgres_url)
    try:
        async with admin.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        await admin.dispose()


async def test_a_service_on_a_missing_postgresql_schema_names_it_and_the_fix(
    missing_schema: StoreSettings,
) -> None:
    with pytest.raises(SchemaNotReady) as raised:
        await open_engine(missing_schema)
    message = str(raised.value)
    assert f"schema '{missing_schema.database_schema}'" in message, message
    assert "does not exist" in message and FIX in message, message


async def test_migrate_creates_a_missing_postgresql_schema(missing_schema: StoreSettings) -> None:
    await migrate(missing_schema)
    engine = await open_engine(missing_schema)
    try:
        assert await SqlStore(engine).get_credits("alice") == 100
    finally:
        await engine.dispose()


@pytest.mark.e2e
def test_services_started_before_migrate_exit_with_one_line_then_start_after_it(
    missing_schema: StoreSettings, amqp_url: str, tmp_path: Path
) -> None:
    schema = missing_schema.database_schema
    assert schema is not None
    env = processes.base_env(
        amqp_url,
        {
            "DATABASE_URL": missing_schema.database_url.get_secret_value(),
            "DATABASE_SCHEMA": schema,
            "OTEL_TRACES_EXPORTER": "none",
            "API_PORT": str(infra.free_port()),
        },
    )
    for name, module in [("early-worker", "workers.credit_check"), ("early-api", "api")]:
        early = processes.spawn(name, [sys.executable, "-m", module], env, tmp_path)
        assert early.wait_exit(within=30) == 1, early.log()
        log = early.log()
        assert f"schema '{schema}'" in log and FIX in log, log
        assert "Traceback" not in log, log
        assert len(log.strip().splitlines()) == 1, log

    done = subprocess.run(
        [sys.executable, "-m", "store.migrate"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert f"(schema '{schema}') is at revision {head_revision()}" in done.stdout, done.stdout
    worker = processes.start_worker("workers.credit_check", env, tmp_path, name="after")
    assert worker.stop() == 0, worker.log()


async def _mark_revision(store_settings: StoreSettings, revision: str) -> None:
    """Set the database's recorded revision, as another release's migrate step would."""
    engine = create_engine(store_settings)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text("UPDATE alembic_version SET version_num = :revision"), {"revision": revision}
            )
    finally:
        await engine.dispose()


async def test_a_service_on_an_older_revision_names_both_revisions(
    store_settings: StoreSettings,
) -> None:
    await _mark_revision(store_settings, "0001")
    with pytest.raises(SchemaNotReady) as raised:
        await open_engine(store_settings)
    message = str(raised.value)
    assert f"revision '0001', this code needs '{head_revision()}'" in message, message
    assert FIX in message, message


async def test_a_database_a_newer_release_migrated_is_named_so_by_the_services_and_migrate(
    store_settings: StoreSettings,
) -> None:
    """A rolled-back deployment: the database is at a revision this code does not know. The
    services said "run migrate", and migrate failed with Alembic's traceback, "Can't locate
    revision identified by '9999'" (a fault campaign)."""
    await _mark_revision(store_settings, "9999")
    newer = (
        f"revision '9999', which this code does not know (this code's newest is "
        f"'{head_revision()}'): a newer release migrated it"
    )
    with pytest.raises(SchemaNotReady) as raised:
        await open_engine(store_settings)
    assert newer in str(raised.value) and FIX not in str(raised.value), raised.value
    with pytest.raises(MigrationFailed) as failed:
        await migrate(store_settings)
    assert newer in str(failed.value) and "could not migrate the database at" in str(failed.value)
