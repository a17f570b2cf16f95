"""``Idempotency-Key``: a client's retries reserve once, on SQLite and PostgreSQL.

- 50 concurrent requests with one key (the first still in flight while the others arrive)
  all answer with the same reservation, charged exactly once;
- a retry after the worker was SIGKILLed (mid-transaction, and after its commit) gets the
  same reservation, charged exactly once;
- the same key with another body: 422; a malformed key, or two keys: 400; a new key: a new
  reservation.
"""

import re
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from store.settings import StoreSettings
from tests.stack import System
from tests.waiting import eventually

CREDITS, PRICE = 1_000, 10
RESERVATIONS = Path(sys.executable).with_name("reservations")  # the CLI's console script
BODY = {"username": "ida", "item_id": "pen"}


@pytest.fixture
def keyed_system(
    empty_store_settings: StoreSettings,  # first: the processes stop before the schema is dropped
    make_system: Callable[[], System],
) -> System:
    system = make_system()
    system.base_env["DATABASE_URL"] = empty_store_settings.database_url.get_secret_value()
    if empty_store_settings.database_schema:
        system.base_env["DATABASE_SCHEMA"] = empty_store_settings.database_schema
    system.base_env["OTEL_TRACES_EXPORTER"] = "none"
    system.seed({"ida": CREDITS}, {"pen": PRICE, "mug": PRICE})
    return system


def _post(url: str, key: str, body: dict[str, str] = BODY) -> httpx.Response:
    return httpx.post(
        f"{url}/reservations", json=body, headers={"Idempotency-Key": key}, timeout=30
    )


def _credits(url: str) -> int:
    credits: int = httpx.get(f"{url}/users/ida", timeout=10).json()["credits"]
    return credits


def test_concurrent_retries_of_one_key_are_charged_once(
    keyed_system: System, api_port: int
) -> None:
    system = keyed_system
    system.start_worker("workers.credit_check")
    system.start_api(api_port)
    url, key = system.api_url, f'"{uuid.uuid4()}"'

    with ThreadPoolExecutor(max_workers=50) as pool:
        answers = list(pool.map(lambda _: _post(url, key), range(50)))

    statuses = Counter(r.status_code for r in answers)
    assert statuses == {201: 50}, {r.status_code: r.text for r in answers}
    assert len({r.json()["reservation_id"] for r in answers}) == 1
    assert {r.json()["credits_left"] for r in answers} == {CREDITS - PRICE}
    assert _credits(url) == CREDITS - PRICE  # charged exactly once

    other_body = _post(url, key, {"username": "ida", "item_id": "mug"})
    assert other_body.status_code == 422, other_body.text
    assert "different request body" in other_body.json()["detail"]
    for malformed in ("", '""', "x" * 256, "caf\u00e9", "a\\b"):
        refused = httpx.post(
            f"{url}/reservations",
            json=BODY,
            headers={b"Idempotency-Key": malformed.encode("utf-8")},
            timeout=10,
        )
        assert refused.status_code == 400, (malformed, refused.text)
    twice = httpx.post(
        f"{url}/reservations",
        json=BODY,
        headers=[("Idempotency-Key", f'"{uuid.uuid4()}"'), ("Idempotency-Key", key)],
        timeout=10,
    )
    assert twice.status_code == 400, twice.text
    assert twice.json()["detail"] == "send one Idempotency-Key header, not 2"
    fresh = _post(url, str(uuid.uuid4()))
    assert (
        fresh.status_code == 201
        and fresh.json()["reservation_id"] != answers[0].json()["reservation_id"]
    )
    assert _credits(url) == CREDITS - 2 * PRICE
    openapi = httpx.get(f"{url}/openapi.json", timeout=10).json()
    parameters = openapi["paths"]["/reservations"]["post"]["parameters"]
    assert [(p["name"], p["in"]) for p in parameters] == [("Idempotency-Key", "header")]

    # The CLI: the same --idempotency-key twice is one reservation.
    cli_key = str(uuid.uuid4())
    outputs = [_cli(system, "reserve", "ida", "pen", "--idempotency-key", cli_key) for _ in "12"]
    ids = {re.search(r"reservation\s+(\S+)", out).group(1) for out in outputs}  # type: ignore[union-attr]
    assert len(ids) == 1, outputs
    assert _credits(url) == CREDITS - 3 * PRICE
    sys.stdout.write(f"\n50 concurrent retries of one key: {dict(statuses)}, charged once\n")


def _cli(system: System, *args: str) -> str:
    env = {**system.base_env, "API_URL": system.api_url, "NO_COLOR": "1"}
    done = subprocess.run(
        [str(RESERVATIONS), *args], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.parametrize("point", ["mid_transaction", "after_commit"])
def test_a_retry_after_a_worker_sigkill_is_charged_once(
    keyed_system: System, api_port: int, point: str
) -> None:
    system = keyed_system
    system.start_api(api_port, RESERVATION_REPLY_TIMEOUT="3")
    url, key = system.api_url, str(uuid.uuid4())
    faulty = system.start_worker(
        "tests.reliability.faulty_worker", name="faulty", WORKER_CRASH_AT=point
    )
    first = _post(url, key)
    assert first.status_code == 202, first.text
    assert faulty.wait_exit() == -signal.SIGKILL, faulty.log()
    system.running.remove(faulty)

    # The client retries while the first request waits for redelivery, then a worker returns.
    with ThreadPoolExecutor(max_workers=1) as pool:
        retry = pool.submit(_post, url, key)
        system.start_worker("workers.credit_check")
        second = retry.result(timeout=60)
    assert second.status_code in (201, 202), second.text
    assert second.json()["reservation_id"] == first.json()["reservation_id"]
    for attempt in eventually(20, every=0.1):
        with attempt:
            third = _post(url, key)
            assert third.status_code == 201, third.text
    assert third.json()["reservation_id"] == first.json()["reservation_id"]
    assert _credits(url) == CREDITS - PRICE  # charged exactly once
    sys.stdout.write(
        f"\nSIGKILL {point}: answers {first.status_code}, {second.status_code}, "
        f"{third.status_code}; one reservation, charged once\n"
    )
