"""Idempotent demo data: users with credits and items with prices, from a small JSON file.

Existing rows are left alone, so restarting a service never resets anyone's balance.
"""

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.identifiers import Identifier
from store.tables import items, users


class SeedData(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    users: dict[Identifier, int] = Field(default_factory=dict)
    items: dict[Identifier, int] = Field(default_factory=dict)


def load_seed(path: Path) -> SeedData:
    return SeedData.model_validate(json.loads(path.read_text()))


async def seed(engine: AsyncEngine, data: SeedData) -> None:
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    rows: list[tuple[Any, list[dict[str, Any]]]] = [
        (users, [{"username": u, "credits": c} for u, c in data.users.items()]),
        (items, [{"item_id": i, "price": p} for i, p in data.items.items()]),
    ]
    async with engine.begin() as conn:
        for table, values in rows:
            if values:
                await conn.execute(dialect.insert(table).values(values).on_conflict_do_nothing())
