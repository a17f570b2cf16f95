"""Which schema revision this code needs, and whether a database is at it.

The migrations live in ``store/migrations`` (Alembic). Alembic is configured here, in code, so
there is no ``alembic.ini``: ``store.migrate`` upgrades, and every service checks at start-up
that the database is at the head revision instead of creating tables itself.
"""

from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

MIGRATIONS = Path(__file__).with_name("migrations")
VERSION_TABLE = "alembic_version"  # Alembic's default: one row, the applied revision
FIX = "run `reservations migrate` (or `make migrate`; in compose, the migrate service) first"


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def schema_problem(connection: Connection, schema: str | None) -> str | None:
    """Why this database is not ready for the services, and what to do, or None when it is at
    the head."""
    inspector = inspect(connection)
    if schema and connection.dialect.name == "postgresql" and not inspector.has_schema(schema):
        return f"the PostgreSQL schema {schema!r} (DATABASE_SCHEMA) does not exist; {FIX}"
    current = current_revision(connection)
    head = head_revision()
    if current == head:
        return None
    if current is None:
        return f"its tables have not been created (no migration has run); {FIX}"
    if not is_known(current):
        return unknown_revision(current)
    return f"it is at schema revision {current!r}, this code needs {head!r}; {FIX}"


def current_revision(connection: Connection) -> str | None:
    if not inspect(connection).has_table(VERSION_TABLE):
        return None
    revision = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()
    return None if revision is None else str(revision)


def is_known(revision: str) -> bool:
    """The revision is one of this code's migrations."""
    scripts = ScriptDirectory.from_config(alembic_config())
    return any(script.revision == revision for script in scripts.walk_revisions())


def unknown_revision(current: str) -> str:
    """Why a database migrated by a newer release (or by something else) cannot be used, nor
    migrated, by this code: a rolled-back deployment, say."""
    return (
        f"it is at schema revision {current!r}, which this code does not know (this code's "
        f"newest is {head_revision()!r}): a newer release migrated it. Run that release, or "
        "restore the database from before its migration"
    )
