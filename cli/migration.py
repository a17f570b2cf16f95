"""``reservations migrate``, also run by ``run`` and ``demo`` before any service starts: the
services' database at the newest schema revision and seeded (store.migrate does the work)."""

import asyncio

from pydantic import SecretStr
from rich.console import Console

from cli.errors import CliError
from cli.settings import CliSettings
from store.migrate import MigrationFailed, migrate
from store.settings import StoreSettings


def migrate_database(settings: CliSettings, console: Console) -> None:
    """Migrate the database the children use (DATABASE_SCHEMA and SEED_FILE come from the env)."""
    store = StoreSettings(database_url=SecretStr(settings.children_database_url()))
    try:
        summary = asyncio.run(migrate(store))
    except MigrationFailed as error:
        raise CliError(
            str(error), hint="see Troubleshooting in the README (the database)."
        ) from None
    console.print(f"migrated: {summary}", highlight=False)
