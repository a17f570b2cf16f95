"""POST /reservations through the real broker to the credit-check worker and back."""

import asyncio
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import make_url, text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import create_async_engine

from api import errors as api_errors
from api.app import create_app
from domain.reservations import Outcome
from messaging import delivery, topology
from messaging.messages import ReservationRequested
from store import engine as engine_module
from store.migrate import migrate
from store.settings import StoreSettings
from tests.hop import Hop
from tests.logs import capture_logs_of
from tests.redelivery import ask_repeatedly
from tests.system import configure_env, purge_work_queues, running_api, start_worker
from tests.waiting import eventually_async

pytestmark = pytest.mark.integration


@pytest.fixture
async def api(
    amqp_url: str, store_settings: StoreSettings, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[httpx.AsyncClient]:
    configure_env(monkeypatch, amqp_url, store_settings)
    await purge_work_queues(amqp_url)
    worker = start_worker()
    try:
        async with running_api() as client:
            yield client
    finally:
        await worker.close()


async def _reserve(client: httpx.AsyncClient, username: str, item_id: str) -> httpx.Response:
    return await client.post("/reservations", json={"username": username, "item_id": item_id})


async def test_confirmed(api: httpx.AsyncClient) -> None:
    response = await _reserve(api, "alice", "book-1")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "confirmed"
    assert body["credits_left"] == 90
    assert len(body["trace_id"]) == 32
    assert response.headers["x-trace-id"] == body["trace_id"]
    assert response.headers["location"] == f"/reservations/{body['reservation_id']}"
    stored = await api.get(response.headers["location"])
    assert stored.status_code == 200
    assert stored.json()["status"] == "confirmed"
    assert (await api.get("/users/alice")).json()["credits"] == 90


async def test_untraced_answers_carry_a_null_trace_id_and_no_header(
    amqp_url: str, store_settings: StoreSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the SDK off there is no trace: every body says ``"trace_id": null``, as the
    server's own 400/408/431/503 do, never an empty string, and no ``X-Trace-Id`` goes out."""
    configure_env(monkeypatch, amqp_url, store_settings)
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    await purge_work_queues(amqp_url)
    worker = start_worker()
    try:
        async with running_api() as client:
            answers = [
                created := await _reserve(client, "alice", "book-1"),
                await client.get(created.headers["location"]),
                await client.get("/users/alice"),
                await client.get("/users/nobody"),
                await _reserve(client, "alice", "x" * 500),
            ]
    finally:
        await worker.close()
    assert [a.status_code for a in answers] == [201, 200, 200, 404, 422]
    assert [a.json()["trace_id"] for a in answers] == [None] * 5
    assert answers[1].json()["request_trace_id"] is None
    assert [a.headers.get("x-trace-id") for a in answers] == [None] * 5


async def test_insufficient_credits_is_409_with_reason(api: httpx.AsyncClient) -> None:
    response = await _reserve(api, "bob", "book-2")
    assert response.status_code == 409
    assert "not enough credits" in response.json()["reason"]
    assert (await api.get("/users/bob")).json()["credits"] == 5


@pytest.mark.parametrize(("username", "item_id"), [("nobody", "book-1"), ("alice", "nothing")])
async def test_unknown_user_or_item_is_404(
    api: httpx.AsyncClient, username: str, item_id: str
) -> None:
    response = await _reserve(api, username, item_id)
    assert response.status_code == 404
    assert response.json()["detail"].startswith("unknown")


@pytest.mark.parametrize(
    "payload",
    [
        {"username": "bad name", "item_id": "book-1"},
        {"username": "a" * 65, "item_id": "book-1"},
        {"username": "alice", "item_id": ""},
        {"username": "alice"},
        {"username": "alice", "item_id": "book-1", "extra": 1},
        {"username": 5, "item_id": "book-1"},
    ],
)
async def test_invalid_input_is_422_and_publishes_nothing(
    api: httpx.AsyncClient, payload: dict[str, object]
) -> None:
    response = await api.post("/reservations", json=payload)
    assert response.status_code == 422
    assert response.json()["detail"][0]["msg"]
    assert (await api.get("/users/alice")).json()["credits"] == 100


async def test_health_and_readiness(api: httpx.AsyncClient) -> None:
    assert (await api.get("/healthz")).json() == {"status": "ok"}
    ready = await api.get("/readyz")
    assert ready.status_code == 200 and ready.json()["broker"] == "up"


@pytest.mark.parametrize("empty_store_settings", ["sqlite"], indirect=True)
async def test_not_ready_while_the_request_channel_is_closed(
    amqp_url: str, store_settings: StoreSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A channel closed for good (aio-pika does not reopen one closed in the middle of its
    restore) with the connection up: every POST answers 503, so /readyz must not say ready."""
    configure_env(monkeypatch, amqp_url, store_settings)
    app = create_app()
    async with running_api(app) as client:
        assert (await client.get("/readyz")).status_code == 200
        await app.state.rpc._channel.close()
        ready = await client.get("/readyz")
        assert ready.status_code == 503, ready.text
        assert ready.json() == {"status": "not ready", "broker": "channel closed"}
        assert (await client.get("/healthz")).status_code == 200


async def test_no_reply_in_time_is_202_then_the_final_state(
    amqp_url: str, store_settings: StoreSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure_env(monkeypatch, amqp_url, store_settings)
    await purge_work_queues(amqp_url)
    monkeypatch.setenv("RESERVATION_REPLY_TIMEOUT", "0.3")
    async with running_api() as client:  # no worker running yet
        response = await _reserve(client, "alice", "book-1")
        assert response.status_code == 202
        body = response.json()
        assert body["status"] == "pending"
        location = response.headers["location"]
        assert location == f"/reservations/{body['reservation_id']}"
        assert (await client.get(location)).status_code == 404
        worker = start_worker()
        try:
            async for attempt in eventually_async(15, every=0.1):
                with attempt:
                    final = await client.get(location)
                    assert final.status_code == 200
            assert final.json()["status"] == "confirmed"
        finally:
            await worker.close()


async def test_redelivered_request_gets_the_same_answer_and_charges_once(
    api: httpx.AsyncClient, amqp_url: str
) -> None:
    request = ReservationRequested(reservation_id=uuid.uuid4(), username="carol", item_id="book-1")
    replies = await ask_repeatedly(amqp_url, request)
    assert replies[0] == replies[1]
    assert replies[0].outcome is Outcome.CONFIRMED
    assert (await api.get("/users/carol")).json()["credits"] == 30


async def test_many_concurrent_requests_all_get_answers(api: httpx.AsyncClient) -> None:
    responses = await asyncio.gather(*(_reserve(api, "alice", "book-1") for _ in range(15)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] * 10 + [409] * 5
    assert (await api.get("/users/alice")).json()["credits"] == 0


async def test_catalogue_and_top_up(api: httpx.AsyncClient) -> None:
    catalogue = (await api.get("/users")).json()
    assert catalogue["users"]["bob"] == 5
    assert catalogue["items"]["book-2"] == 25
    assert (await _reserve(api, "bob", "book-2")).status_code == 409
    topped = await api.post("/users/bob/credits", json={"amount": 20})
    assert topped.status_code == 200 and topped.json()["credits"] == 25
    assert (await _reserve(api, "bob", "book-2")).status_code == 201
    assert (await api.post("/users/nobody/credits", json={"amount": 1})).status_code == 404
    assert (await api.post("/users/bob/credits", json={"amount": -5})).status_code == 422
    for not_an_amount in (True, "5", 2.5, None):  # no coercion: true is not 1 credit
        refused = await api.post("/users/bob/credits", json={"amount": not_an_amount})
        assert refused.status_code == 422, (not_an_amount, refused.text)
    assert (await api.get("/users/bob")).json()["credits"] == 0


def _replace_with_directory(database: Path) -> None:
    for path in database.parent.glob(database.name + "*"):  # the file, its -wal and -shm
        path.unlink()
    database.mkdir()  # the database path is now something SQLite cannot open


async def test_database_down_is_503_not_500(
    amqp_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = tmp_path / "gone.db"
    settings = StoreSettings(database_url=SecretStr(f"sqlite+aiosqlite:///{database}"))
    await migrate(settings)
    configure_env(monkeypatch, amqp_url, settings)
    app = create_app()
    async with running_api(app) as client:
        assert (await client.get("/users/alice")).status_code == 200
        await app.state.store.engine.dispose()  # drop pooled connections to the file
        _replace_with_directory(database)
        response = await client.get("/users/alice")
    assert response.status_code == 503
    assert response.json()["detail"] == "The database is unavailable. Retry shortly."


SECRET = "postgresql://reservations:s3cret@db/prod"


def _lost(message: str) -> DBAPIError:
    """What SQLAlchemy raises for a connection lost mid-statement (asyncpg's error has no
    DBAPI class of its own)."""
    return DBAPIError(message, {}, Exception(message), connection_invalidated=True)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (RuntimeError(f"a bug, holding {SECRET}"), 500),
        (IntegrityError(SECRET, {}, Exception(SECRET)), 500),  # a statement's fault: a bug
        (DBAPIError(SECRET, {}, Exception(SECRET)), 500),
        (_lost(SECRET), 503),
        (PoolTimeout(f"QueuePool limit reached, {SECRET}"), 503),
        (OperationalError(SECRET, {}, Exception(SECRET)), 503),
    ],
    ids=["bug", "integrity", "statement", "connection-lost", "pool-timeout", "operational"],
)
async def test_a_failure_is_a_500_or_a_503_with_the_trace_id_and_no_details(
    amqp_url: str,
    store_settings: StoreSettings,
    monkeypatch: pytest.MonkeyPatch,
    error: Exception,
    status: int,
) -> None:
    """A lost database is a 503 (retry shortly); anything else a 500 that says nothing but
    where to look: the trace id, in the body and the X-Trace-Id header."""
    configure_env(monkeypatch, amqp_url, store_settings)
    logged = capture_logs_of(monkeypatch, api_errors)
    app = create_app()

    async def fail(username: str) -> int | None:
        raise error

    async with running_api(app, raise_app_exceptions=False) as client:
        monkeypatch.setattr(app.state.store, "get_credits", fail)  # a stand-in for the failure
        response = await client.get("/users/alice")
    assert response.status_code == status, response.text
    body = response.json()
    expected = {
        500: "Internal error: the request failed unexpectedly.",
        503: "The database is unavailable. Retry shortly.",
    }
    assert body["detail"] == expected[status]
    assert len(body["trace_id"]) == 32
    assert response.headers["x-trace-id"] == body["trace_id"]
    assert "s3cret" not in response.text and type(error).__name__ not in response.text
    if status == 503:  # the log says which failure, by the driver's class only
        (line,) = [e for e in logged.entries if e["event"] == "database unavailable: answered 503"]
        assert line["error"] == type(error).__name__  # no cause chained here
        assert "s3cret" not in str(line)
    if status == 500:  # uvicorn closes the connection after it: the client is told
        assert response.headers["connection"] == "close"


@pytest.mark.parametrize("empty_store_settings", ["postgresql"], indirect=True)
async def test_a_database_connection_lost_under_a_request_is_503(
    amqp_url: str, store_settings: StoreSettings, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed moments after its last use (too soon for the idle ping): the request that finds
    it dead is told to retry, and the retry runs on a new connection."""
    configure_env(monkeypatch, amqp_url, store_settings)
    monkeypatch.setenv("DATABASE_POOL_SIZE", "1")
    app = create_app()
    admin = create_async_engine(postgres_url)
    try:
        async with running_api(app) as client:
            assert (await client.get("/users/alice")).status_code == 200
            async with app.state.store.engine.connect() as conn:
                pid = await conn.scalar(text("SELECT pg_backend_pid()"))
            async with admin.connect() as conn:
                assert await conn.scalar(text(f"SELECT pg_terminate_backend({pid})"))
            lost = await client.get("/users/alice")
            again = await client.get("/users/alice")
    finally:
        await admin.dispose()
    assert lost.status_code == 503, lost.text
    assert lost.json()["detail"] == "The database is unavailable. Retry shortly."
    assert lost.headers["retry-after"] == "1"
    assert again.status_code == 200, again.text


@pytest.mark.parametrize("empty_store_settings", ["postgresql"], indirect=True)
async def test_postgresql_stopped_is_503_until_it_is_back(
    amqp_url: str,
    behind_a_hop: tuple[Hop, StoreSettings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Connections refused (asyncpg raises the network's error unwrapped) are a 503 as a lost
    connection is, not a 500; the first request after the server is back is served."""
    hop, settings = behind_a_hop
    configure_env(monkeypatch, amqp_url, settings)
    app = create_app()
    async with running_api(app) as client:
        assert (await client.get("/users/alice")).status_code == 200
        await hop.down()
        down = [await client.get("/users/alice") for _ in range(3)]
        down.append(await client.post("/users/alice/credits", json={"amount": 1}))
        await hop.up()
        back = await client.get("/users/alice")
    for response in down:
        assert response.status_code == 503, response.text
        assert response.json()["detail"] == "The database is unavailable. Retry shortly."
        assert len(response.json()["trace_id"]) == 32
    assert back.status_code == 200, back.text


@pytest.mark.parametrize("empty_store_settings", ["postgresql"], indirect=True)
async def test_a_frozen_postgresql_is_503_not_a_hang(
    amqp_url: str,
    behind_a_hop: tuple[Hop, StoreSettings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A server that accepts connections and answers nothing (frozen, or a network that drops
    packets) raises no error by itself: every request would wait for ever. A transaction
    abandons it after DATABASE_TRANSACTION_TIMEOUT, closes that connection, and the request
    is a 503; once the server answers again, so does the API."""
    hop, settings = behind_a_hop
    configure_env(monkeypatch, amqp_url, settings)
    monkeypatch.setenv("DATABASE_TRANSACTION_TIMEOUT", "1")
    app = create_app()
    async with running_api(app) as client:
        assert (await client.get("/users/alice")).status_code == 200
        hop.freeze()
        started = time.monotonic()
        async with asyncio.timeout(20):  # the failure this test is about: a request that hangs
            frozen = await asyncio.gather(
                client.get("/users/alice"),
                client.post("/users/alice/credits", json={"amount": 1}),
                client.get("/users/bob"),
            )
        waited = time.monotonic() - started
        hop.thaw()
        back = await client.get("/users/alice")
    for response in frozen:
        assert response.status_code == 503, response.text
        assert response.json()["detail"] == "The database is unavailable. Retry shortly."
    assert waited < 15, waited  # bounded (not a speed check): 1 s, plus the connections' close
    assert back.status_code == 200, back.text


@pytest.mark.parametrize("empty_store_settings", ["postgresql"], indirect=True)
@pytest.mark.parametrize("outage", ["stopped", "connections_silent"])
async def test_a_request_outlives_a_short_postgresql_outage(
    amqp_url: str,
    behind_a_hop: tuple[Hop, StoreSettings],
    monkeypatch: pytest.MonkeyPatch,
    outage: str,
) -> None:
    """The worker holds a message whose handler found the database gone until it answers
    again, instead of spending its three attempts in 0.6 s and parking it (dead letter). Gone:
    refusing connections; or, as after a fail-over, silent for good on the connections it had
    (no error ever comes: the transaction timeout abandons them) and answering on new ones."""
    hop, settings = behind_a_hop
    configure_env(monkeypatch, amqp_url, settings)
    monkeypatch.setenv("DATABASE_TRANSACTION_TIMEOUT", "0.5")
    await purge_work_queues(amqp_url)
    worker = start_worker()
    try:
        async with running_api() as client:
            assert (await client.get("/users/alice")).status_code == 200
            if outage == "stopped":
                await hop.down()
            else:
                hop.freeze(new_connections=False)
            answer = asyncio.ensure_future(_reserve(client, "alice", "book-1"))
            await asyncio.sleep(2)  # three attempts would have come and gone
            if outage == "stopped":
                await hop.up()
            response = await answer
    finally:
        await worker.close()
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "confirmed"
    assert response.json()["credits_left"] == 90  # charged once


@pytest.mark.parametrize("empty_store_settings", ["postgresql"], indirect=True)
async def test_a_request_outlives_a_row_lock_held_past_its_attempts(
    amqp_url: str, store_settings: StoreSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another session holds the user's row (a long transaction, a migration): the worker's
    transaction runs out of time, yet the database answers the outage probe at once. Held only
    until that answer, the three attempts took three transaction timeouts, and a lock held
    longer dead-lettered the request (a fault campaign: 5 of 5 with a 20 s lock, then 404).
    Now the second attempt's failure is held for up to DATABASE_BUSY_PAUSE (5 s here; 30 s by
    default) and is no attempt: the message comes back after the lock is gone, where it used
    to give up at about 2.2 s."""
    configure_env(monkeypatch, amqp_url, store_settings)
    monkeypatch.setenv("DATABASE_TRANSACTION_TIMEOUT", "0.5")
    monkeypatch.setenv("RESERVATION_REPLY_TIMEOUT", "15")
    monkeypatch.setenv("DATABASE_BUSY_PAUSE", "5")
    await purge_work_queues(amqp_url)
    locker = await engine_module.open_engine(store_settings)
    worker = start_worker()
    try:
        async with running_api() as client:
            async with locker.begin() as conn:
                await conn.execute(text("SELECT 1 FROM users WHERE username = 'alice' FOR UPDATE"))
                answer = asyncio.ensure_future(_reserve(client, "alice", "book-1"))
                await asyncio.sleep(4)  # three attempts would have come and gone
            response = await answer
    finally:
        await worker.close()
        await locker.dispose()
    assert response.status_code == 201, response.text
    assert response.json()["credits_left"] == 90  # charged once


@pytest.mark.parametrize("empty_store_settings", ["postgresql"], indirect=True)
async def test_a_worker_stopping_while_the_database_is_silent_gives_its_message_back(
    amqp_url: str, behind_a_hop: tuple[Hop, StoreSettings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM while a handler waits on a database that does not answer: the handler fails
    at the transaction timeout, after the stop began, and its message goes back to the queue
    unsettled, for the next worker, instead of using up an attempt. Every delivery is the last
    attempt here (MAX_ATTEMPTS 1), where the message would otherwise be dead-lettered."""
    hop, settings = behind_a_hop
    configure_env(monkeypatch, amqp_url, settings)
    monkeypatch.setenv("DATABASE_TRANSACTION_TIMEOUT", "1")
    monkeypatch.setattr(delivery, "MAX_ATTEMPTS", 1)
    await purge_work_queues(amqp_url)
    worker = start_worker()
    async with running_api() as client:
        try:
            assert (await client.get("/users/alice")).status_code == 200
            hop.freeze()
            answer = asyncio.ensure_future(_reserve(client, "alice", "book-1"))
            await asyncio.sleep(0.3)  # the handler's transaction waits on the silent database
        finally:
            await worker.close()
        pending = await answer
        assert pending.status_code == 202, pending.text
        connection = await aio_pika.connect(amqp_url)
        try:
            declared = await topology.declare(await connection.channel())
            dead = await declared.queues[topology.DEAD_LETTERS.name].get(fail=False)
            waiting = await declared.queues[topology.CREDIT_CHECK.name].declare()
        finally:
            await connection.close()
        assert dead is None, dead.body
        assert waiting.message_count == 1
        hop.thaw()
        worker = start_worker()
        try:
            async for attempt in eventually_async(10):
                with attempt:
                    stored = await client.get(pending.headers["location"])
                    assert stored.status_code == 200, stored.text
                    assert stored.json()["status"] == "confirmed", stored.text
        finally:
            await worker.close()
        assert (await client.get("/users/alice")).json()["credits"] == 90  # charged once


@pytest.mark.parametrize("empty_store_settings", ["sqlite"], indirect=True)
async def test_a_sqlite_file_locked_past_the_busy_timeout_is_503(
    amqp_url: str, store_settings: StoreSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process holding the write lock longer than the busy timeout: the BEGIN that
    gives up is a 503 (retry shortly), not a 500, and nothing was written."""
    monkeypatch.setattr(engine_module, "SQLITE_BUSY_TIMEOUT_MS", 100)
    configure_env(monkeypatch, amqp_url, store_settings)
    app = create_app()
    database = make_url(store_settings.database_url.get_secret_value()).database
    assert database
    async with running_api(app) as client:
        before = (await client.get("/users/alice")).json()["credits"]
        other = sqlite3.connect(database, isolation_level=None)
        try:
            other.execute("BEGIN EXCLUSIVE")
            locked = await client.post("/users/alice/credits", json={"amount": 1})
            other.execute("ROLLBACK")
        finally:
            other.close()
        after = (await client.get("/users/alice")).json()["credits"]
    assert locked.status_code == 503, locked.text
    assert locked.json()["detail"] == "The database is unavailable. Retry shortly."
    assert after == before


@pytest.mark.parametrize("empty_store_settings", ["postgresql"], indirect=True)
async def test_a_database_connection_lost_mid_statement_is_503_and_sends_nothing(
    amqp_url: str, store_settings: StoreSettings, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The request's claim of its Idempotency-Key waits behind another transaction's claim of
    the same key; its connection is killed meanwhile. A 503 (nothing was published, so a
    retry is safe), not a bare 500."""
    configure_env(monkeypatch, amqp_url, store_settings)
    await purge_work_queues(amqp_url)
    app = create_app()
    admin = create_async_engine(postgres_url)
    key = f"key-{uuid.uuid4()}"
    schema = store_settings.database_schema
    try:
        async with running_api(app) as client, admin.connect() as blocker:
            await blocker.execute(
                text(
                    f'INSERT INTO "{schema}".idempotency_keys VALUES '
                    "('POST /reservations', :key, 'f', :id, 9999999999)"
                ),
                {"key": key, "id": str(uuid.uuid4())},
            )  # not committed: the request's INSERT of the same key waits for it
            post = asyncio.create_task(
                client.post(
                    "/reservations",
                    json={"username": "alice", "item_id": "book-1"},
                    headers={"Idempotency-Key": key},
                )
            )
            async with admin.connect() as killer:
                async for attempt in eventually_async(10):
                    with attempt:
                        waiting = await killer.scalar(
                            text(
                                "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                                " AND query LIKE '%idempotency_keys%'"
                            )
                        )
                        assert waiting is not None
                assert await killer.scalar(text(f"SELECT pg_terminate_backend({waiting})"))
            lost = await post
            await blocker.rollback()
    finally:
        await admin.dispose()
    assert lost.status_code == 503, lost.text
    assert lost.json()["detail"] == "The database is unavailable. Retry shortly."
    assert await _requests_queued(amqp_url) == 0


async def _requests_queued(amqp_url: str) -> int:
    async with await aio_pika.connect(amqp_url) as connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(
            topology.CREDIT_CHECK.name,
            durable=True,
            arguments=dict(topology.CREDIT_CHECK.arguments),
        )
        return queue.declaration_result.message_count or 0
