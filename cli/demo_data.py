"""The demo tells the same story every time: before it, its two users get their seed credits
back (alice can afford book-1, bob cannot afford course-1), whatever earlier runs, top-ups or
load tests did to them. Everyone else's data is left as it is."""

import asyncio
from collections.abc import Iterable

from pydantic import SecretStr
from sqlalchemy import update

from cli.settings import CliSettings
from store.engine import create_engine
from store.seed import load_seed
from store.settings import StoreSettings
from store.tables import users


def reset_demo_users(settings: CliSettings, usernames: Iterable[str]) -> dict[str, int]:
    """Set each of ``usernames`` back to its credits in the seed file; returns them."""
    store = StoreSettings(database_url=SecretStr(settings.children_database_url()))
    credits = {name: load_seed(store.seed_file).users[name] for name in usernames}
    asyncio.run(_set_credits(store, credits))
    return credits


async def _set_credits(store: StoreSettings, credits: dict[str, int]) -> None:
    engine = create_engine(store)
    try:
        async with engine.begin() as conn:
            for username, amount in credits.items():
                await conn.execute(
                    update(users).where(users.c.username == username).values(credits=amount)
                )
    finally:
        await engine.dispose()
