"""``python -m store.migrate``: the one-shot step that readies the database for the services.

It creates the PostgreSQL schema named by ``DATABASE_SCHEMA`` when it is missing, upgrades the
tables to the newest Alembic revision and seeds the users and items of ``SEED_FILE`` (rows that
exist are left alone, so a balance is never reset). Running it again changes nothing. The
services only check that it has run (store.engine.open_engine); they never create tables.
"""

import asyncio
import sys

from alembic import command
from sqlalchemy import text
from sqlalchemy.engine import Connection, make_url

from service.settings_check import check, settings_checked
from store.engine import CONNECT_ERRORS, create_engine, failure, for_writes
from store.revisions import (
    alembic_config,
    current_revision,
    head_revision,
    is_known,
    unknown_revision,
)
from store.seed import load_seed, seed
from store.settings import StoreSettings


class MigrationFailed(RuntimeError):
    """The database could not be reached or migrated; the message is one line saying why."""


async def migrate(settings: StoreSettings) -> str:
    """Create the schema if missing, upgrade to the head revision, seed; returns a summary."""
    url = make_url(settings.database_url.get_secret_value())
    where = url.render_as_string(hide_password=True)
    schema = settings.database_schema if url.get_backend_name() == "postgresql" else None
    try:
        seed_data = load_seed(settings.seed_file)  # first: a wrong SEED_FILE is no database's
    except (OSError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        raise MigrationFailed(
            f"could not read the seed file {settings.seed_file} (SEED_FILE): "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no detail'}"
        ) from None
    try:
        if schema:
            await _create_schema(settings, schema)
        engine = create_engine(settings)
        try:
            async with for_writes(engine).begin() as conn:
                await conn.run_sync(_upgrade)
            await seed(engine, seed_data)
        finally:
            await engine.dispose()
    except CONNECT_ERRORS as exc:
        raise MigrationFailed(
            f"could not migrate the database at {where} ({failure(exc)}). Check DATABASE_URL "
            "and that the server is up."
        ) from None
    except MigrationFailed as exc:
        raise MigrationFailed(f"could not migrate the database at {where}: {exc}") from None
    in_schema = f" (schema {schema!r})" if schema else ""
    return f"{where}{in_schema} is at revision {head_revision()}, seeded from {settings.seed_file}"


async def _create_schema(settings: StoreSettings, schema: str) -> None:
    # A connection without the search_path, so the new schema is seen from the first statement.
    engine = create_engine(settings.model_copy(update={"database_schema": None}))
    try:
        async with engine.begin() as conn:
            await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    finally:
        await engine.dispose()


def _upgrade(connection: Connection) -> None:
    current = current_revision(connection)
    if current is not None and not is_known(current):  # Alembic: "Can't locate revision"
        raise MigrationFailed(unknown_revision(current))
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def main() -> None:
    with settings_checked("migrate: "):
        check(StoreSettings)
    settings = StoreSettings()
    try:
        summary = asyncio.run(migrate(settings))
    except MigrationFailed as exc:
        sys.stderr.write(f"migrate: {exc}\n")
        sys.exit(1)
    sys.stdout.write(f"migrate: {summary}\n")


if __name__ == "__main__":
    main()
