"""Alembic's environment: runs the revisions on the connection ``store.migrate`` hands over in
``config.attributes["connection"]``, so the engine set-up (SQLite pragmas, PostgreSQL
``search_path``) is the services' own."""

from alembic import context
from sqlalchemy.engine import Connection

from store.tables import metadata


def run_migrations(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata)
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `python -m store.migrate` (store/migrate.py)")
run_migrations(connection)
