"""Concurrency and conservation: credits are neither created nor lost under load.

2,000 reservations hit one API process at once (64 in flight) for 20 users with 100 credits
each; two credit-check worker processes race to deduct. Most requests must be rejected, and
the books must balance exactly, on SQLite and on PostgreSQL:

- no balance is ever negative;
- what was deducted equals the sum of the prices of the confirmed reservations;
- every request has exactly one final outcome, and one row in ``reservations``;
- each user's confirmed reservations form one serial chain of balances (100, 93, 80, ...):
  no two deductions ever read the same balance;
- every rejection was justified: the balance it saw was below the price.
"""

import asyncio
import json
import sys
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select

from domain.reservations import Outcome
from store.engine import create_engine
from store.settings import StoreSettings
from store.tables import reservations, users
from tests.stack import System
from tests.waiting import eventually_async

USERS = {f"cons-{i:02d}": 100 for i in range(20)}
ITEMS = {"cheap": 7, "dear": 13}
REQUESTS = 2_000
IN_FLIGHT = 64

FINAL = {201: Outcome.CONFIRMED.value, 409: Outcome.REJECTED_INSUFFICIENT_CREDITS.value}


@pytest.fixture
def seed_file(tmp_path: Path) -> Path:
    path = tmp_path / "conservation-seed.json"
    path.write_text(json.dumps({"users": USERS, "items": ITEMS}))
    return path


def _order(i: int) -> dict[str, str]:
    """Request i: users in turn, cheap and dear items interleaved for each user."""
    user = list(USERS)[i % len(USERS)]
    item = "cheap" if (i // len(USERS)) % 2 == 0 else "dear"
    return {"username": user, "item_id": item}


async def _fire(api_url: str) -> list[tuple[dict[str, str], httpx.Response]]:
    # The client forgets idle connections well before uvicorn's 5 s keep-alive timeout: at the
    # same 5 s (httpx's default) a reused connection can race the server closing it (RST).
    limits = httpx.Limits(
        max_connections=IN_FLIGHT, max_keepalive_connections=IN_FLIGHT, keepalive_expiry=1
    )
    gate = asyncio.Semaphore(IN_FLIGHT)
    async with httpx.AsyncClient(base_url=api_url, limits=limits, timeout=60) as client:

        async def one(i: int) -> tuple[dict[str, str], httpx.Response]:
            async with gate:
                order = _order(i)
                return order, await client.post("/reservations", json=order)

        return await asyncio.gather(*(one(i) for i in range(REQUESTS)))


async def _final_state(api_url: str, reservation_id: str) -> str:
    """The stored outcome of a reservation answered 202, polled until a worker recorded it."""
    async with httpx.AsyncClient(base_url=api_url, timeout=10) as client:
        async for attempt in eventually_async(30, every=0.2):
            with attempt:
                found = await client.get(f"/reservations/{reservation_id}")
                assert found.status_code == 200, found.text
    status: str = found.json()["status"]
    return status


async def _read_db(settings: StoreSettings) -> tuple[dict[str, int], list[Any]]:
    engine = create_engine(settings)
    try:
        async with engine.connect() as conn:
            balances = {row.username: row.credits for row in await conn.execute(select(users))}
            rows = list(await conn.execute(select(reservations)))
    finally:
        await engine.dispose()
    return balances, rows


async def test_concurrent_reservations_conserve_credits(
    empty_store_settings: StoreSettings,  # first: the processes stop before the schema is dropped
    make_system: Callable[[], System],
    api_port: int,
    seed_file: Path,
) -> None:
    system = make_system()
    database = {"DATABASE_URL": empty_store_settings.database_url.get_secret_value()}
    if empty_store_settings.database_schema:
        database["DATABASE_SCHEMA"] = empty_store_settings.database_schema
    backend = "postgresql" if empty_store_settings.database_schema else "sqlite"
    # Spans are still made in every process, but not exported: this test is about the books.
    system.base_env.update(
        {**database, "SEED_FILE": str(seed_file), "OTEL_TRACES_EXPORTER": "none"}
    )
    system.start_worker("workers.credit_check", name="credit-check-1")
    system.start_worker("workers.credit_check", name="credit-check-2")
    system.start_api(api_port, RESERVATION_REPLY_TIMEOUT="30")

    answers = await _fire(system.api_url)

    statuses = Counter(response.status_code for _, response in answers)
    assert set(statuses) <= {201, 202, 409}, {
        r.status_code: r.text for _, r in answers if r.status_code not in (201, 202, 409)
    }
    outcome_by_id: dict[str, str] = {}
    user_by_id: dict[str, str] = {}
    for order, response in answers:
        reservation_id = response.json()["reservation_id"]
        assert reservation_id not in outcome_by_id, f"reservation id {reservation_id} reused"
        user_by_id[reservation_id] = order["username"]
        if response.status_code == 202:
            outcome_by_id[reservation_id] = await _final_state(system.api_url, reservation_id)
        else:
            outcome_by_id[reservation_id] = FINAL[response.status_code]

    balances, rows = await _read_db(
        StoreSettings(
            database_url=SecretStr(database["DATABASE_URL"]),
            database_schema=database.get("DATABASE_SCHEMA"),
        )
    )

    # Exactly one row per reservation the API handed out, with the outcome the client saw.
    assert len(rows) == len(answers) == REQUESTS
    stored = {row.reservation_id: row for row in rows}
    assert set(stored) == set(outcome_by_id)
    for reservation_id, outcome in outcome_by_id.items():
        assert stored[reservation_id].outcome == outcome, reservation_id
        assert stored[reservation_id].username == user_by_id[reservation_id]

    # No balance negative; what was deducted is what the confirmed reservations cost.
    assert set(balances) == set(USERS)
    assert min(balances.values()) >= 0, balances
    confirmed = [row for row in rows if row.outcome == Outcome.CONFIRMED.value]
    rejected = [row for row in rows if row.outcome == Outcome.REJECTED_INSUFFICIENT_CREDITS.value]
    assert len(confirmed) + len(rejected) == REQUESTS
    deducted = sum(USERS.values()) - sum(balances.values())
    assert deducted == sum(row.price for row in confirmed)
    assert all(row.price == ITEMS[row.item_id] for row in confirmed)

    # Per user: confirmed deductions form one serial chain from the seed balance down to the
    # final one, and every rejection saw a balance below the price.
    chains: dict[str, list[Any]] = defaultdict(list)
    for row in confirmed:
        chains[row.username].append(row)
    for username, seeded in USERS.items():
        balance = seeded
        for row in sorted(chains[username], key=lambda r: -r.credits_left):
            assert row.credits_left == balance - row.price, (username, balance, row)
            balance = row.credits_left
        assert balance == balances[username], (username, balance, balances[username])
    for row in rejected:
        assert row.price == ITEMS[row.item_id]
        assert row.credits_left < row.price, row

    assert len(confirmed) > 0 and len(rejected) > len(confirmed)  # the limit was really hit
    sys.stdout.write(
        f"\n[{backend}] {REQUESTS} requests, {IN_FLIGHT} in flight, 2 workers: "
        f"confirmed {len(confirmed)}, rejected {len(rejected)}, "
        f"answered 202 then final {statuses.get(202, 0)}; "
        f"deducted {deducted} of {sum(USERS.values())} credits; "
        f"min balance {min(balances.values())}\n"
    )
