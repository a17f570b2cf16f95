"""The lean twin (bench/twin) does the system's work: same answers, same idempotency, one trace.

The twin runs as real processes in a private vhost, on a fresh SQLite file or PostgreSQL
schema; the system runs in this process (API and credit-check worker) on its own database.
"""

import os
import signal
import sqlite3
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest
from yarl import URL

from api.schemas import ReservationConfirmedBody, ReservationPendingBody, ReservationRejectedBody
from bench.twin import TRACED, UNTRACED, launch
from cli.collector import OtlpReceiver
from domain.reservations import Outcome
from messaging import topology
from messaging.messages import ReservationRequested
from store.settings import StoreSettings
from tests import infra, processes
from tests.infra import Broker
from tests.redelivery import ask_repeatedly
from tests.system import configure_env, purge_work_queues, running_api, start_worker
from tests.waiting import eventually, eventually_async

pytestmark = pytest.mark.integration

CASES = [
    ("alice", "book-1", 201),
    ("bob", "book-2", 409),
    ("nobody", "book-1", 404),
    ("alice", "nothing", 404),
    ("bad name", "book-1", 422),
]


@pytest.fixture
def twin_amqp_url(broker: Broker) -> Iterator[str]:
    """A vhost of the twin's own: it declares the system's queue names."""
    name = f"twin-{uuid.uuid4().hex[:8]}"
    url = URL(broker.url)
    broker.rabbitmqctl("add_vhost", name)
    broker.rabbitmqctl("set_permissions", "-p", name, url.user or "guest", ".*", ".*", ".*")
    yield str(url.with_path("/" + name))
    broker.rabbitmqctl("delete_vhost", name)


@pytest.fixture
async def twin_db(store_settings: StoreSettings, tmp_path: Path) -> AsyncIterator[dict[str, str]]:
    """A fresh database of the same kind as ``store_settings``, for the twin alone."""
    if store_settings.database_schema is None:
        yield {"DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/twin.db"}
        return
    url = store_settings.database_url.get_secret_value()
    schema = f"twin_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(_dsn(url))
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        yield {"DATABASE_URL": url, "DATABASE_SCHEMA": schema}
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    finally:
        await conn.close()


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def _query(db_env: dict[str, str], sql: str) -> list[tuple[Any, ...]]:
    url = db_env["DATABASE_URL"]
    if url.startswith("sqlite"):
        with sqlite3.connect(url.split(":///", 1)[1]) as conn:
            return list(conn.execute(sql))
    conn = await asyncpg.connect(
        _dsn(url), server_settings={"search_path": db_env["DATABASE_SCHEMA"]}
    )
    try:
        return [tuple(row) for row in await conn.fetch(sql)]
    finally:
        await conn.close()


class Twin:
    def __init__(self, running: list[processes.Process], port: int) -> None:
        self.running = running
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        for process in reversed(self.running):
            code = process.stop()
            assert code in (0, -signal.SIGTERM), process.log()


def start_twin(
    variant: str,
    amqp_url: str,
    db_env: dict[str, str],
    log_dir: Path,
    *,
    workers: bool = True,
    otlp_endpoint: str | None = None,
    **extra: str,
) -> Twin:
    port = infra.free_port()
    env = {**os.environ, "AMQP_URL": amqp_url, **extra}
    specs = launch(variant, db_env, env, port=port, otlp_endpoint=otlp_endpoint)
    running: list[processes.Process] = []
    twin = Twin(running, port)
    try:
        for spec in specs:
            if spec.queue is not None and not workers:
                continue
            args = [sys.executable, "-m", *spec.module_args]
            process = processes.spawn(spec.name, args, spec.env, log_dir)
            running.append(process)
            if spec.queue is not None:
                process.wait_for_log(f"consuming {spec.queue}")
        for attempt in eventually(30, every=0.2, retry_on=(AssertionError, httpx.HTTPError)):
            with attempt:
                assert running[-1].popen.poll() is None, running[-1].log()
                assert httpx.get(f"{twin.url}/readyz", timeout=1).status_code == 200
    except BaseException:
        twin.stop()
        raise
    return twin


def _comparable(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in ("reservation_id", "trace_id")}


async def test_twin_answers_as_the_system(
    amqp_url: str,
    twin_amqp_url: str,
    store_settings: StoreSettings,
    twin_db: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    twin = start_twin(UNTRACED, twin_amqp_url, twin_db, tmp_path)
    configure_env(monkeypatch, amqp_url, store_settings)
    await purge_work_queues(amqp_url)
    worker = start_worker()
    try:
        async with running_api() as system, httpx.AsyncClient(base_url=twin.url) as lean:
            for username, item_id, status in CASES:
                body = {"username": username, "item_id": item_id}
                expected = await system.post("/reservations", json=body)
                got = await lean.post("/reservations", json=body)
                assert (expected.status_code, got.status_code) == (status, status), got.text
                assert _comparable(got.json()) == _comparable(expected.json())
                assert got.json()["trace_id"] is None  # untraced
                if status != 422:
                    assert uuid.UUID(got.json()["reservation_id"])
    finally:
        await worker.close()
        twin.stop()
    rows = await _query(twin_db, "SELECT username, credits FROM users ORDER BY username")
    assert rows == [("alice", 90), ("bob", 5), ("carol", 40)]


async def test_twin_bodies_fit_the_system_schemas_and_202_without_a_worker(
    twin_amqp_url: str, tmp_path: Path
) -> None:
    db_env = {"DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/twin.db"}
    twin = start_twin(
        UNTRACED, twin_amqp_url, db_env, tmp_path, workers=False, RESERVATION_REPLY_TIMEOUT="0.3"
    )
    try:
        async with httpx.AsyncClient(base_url=twin.url) as lean:
            response = await lean.post("/reservations", json={"username": "a", "item_id": "b"})
    finally:
        twin.stop()
    assert response.status_code == 202
    pending = ReservationPendingBody.model_validate(response.json())
    assert response.headers["location"] == f"/reservations/{pending.reservation_id}"
    twin = start_twin(UNTRACED, twin_amqp_url, db_env, tmp_path)
    try:
        async with httpx.AsyncClient(base_url=twin.url) as lean:
            confirmed = await lean.post(
                "/reservations", json={"username": "alice", "item_id": "book-1"}
            )
            rejected = await lean.post(
                "/reservations", json={"username": "bob", "item_id": "book-2"}
            )
    finally:
        twin.stop()
    assert (confirmed.status_code, rejected.status_code) == (201, 409)
    assert ReservationConfirmedBody.model_validate(confirmed.json()).credits_left == 90
    assert (
        ReservationRejectedBody.model_validate(rejected.json()).status
        == "rejected_insufficient_credits"
    )


async def test_twin_is_idempotent_by_reservation_id(
    twin_amqp_url: str, twin_db: dict[str, str], tmp_path: Path
) -> None:
    twin = start_twin(UNTRACED, twin_amqp_url, twin_db, tmp_path)
    request = ReservationRequested(reservation_id=uuid.uuid4(), username="carol", item_id="book-1")
    try:
        replies = await ask_repeatedly(twin_amqp_url, request)  # the system's contract
        assert replies[0] == replies[1]
        assert replies[0].outcome is Outcome.CONFIRMED and replies[0].credits_left == 30
        async for attempt in eventually_async(10):
            with attempt:
                rows = await _query(
                    twin_db, "SELECT outcome, download_token IS NOT NULL FROM reservations"
                )
                assert rows == [("confirmed", True)]
    finally:
        twin.stop()
    assert await _query(twin_db, "SELECT credits FROM users WHERE username = 'carol'") == [(30,)]


def test_traced_twin_makes_one_trace_with_consumers_under_their_producers(
    twin_amqp_url: str, receiver: OtlpReceiver, tmp_path: Path
) -> None:
    db_env = {"DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/twin.db"}
    twin = start_twin(
        TRACED,
        twin_amqp_url,
        db_env,
        tmp_path,
        otlp_endpoint=receiver.endpoint,
        OTEL_BSP_SCHEDULE_DELAY="100",
    )
    try:
        response = httpx.post(
            f"{twin.url}/reservations", json={"username": "alice", "item_id": "book-1"}, timeout=10
        )
        assert response.status_code == 201, response.text
        ReservationConfirmedBody.model_validate(response.json())
        trace_id = response.json()["trace_id"]
        assert len(trace_id) == 32 and response.headers["x-trace-id"] == trace_id
        assert receiver.store.wait_for(lambda s: len(s.trace(trace_id)) >= 9, timeout=15)
    finally:
        twin.stop()
    spans = receiver.store.trace(trace_id)
    by = {
        (s.service, s.kind): [x for x in spans if (x.service, x.kind) == (s.service, s.kind)]
        for s in spans
    }
    (server,) = by[("twin-api", "SERVER")]
    (request,) = by[("twin-api", "PRODUCER")]
    (reply_in,) = by[("twin-api", "CONSUMER")]
    (request_in,) = by[("twin-credit-check", "CONSUMER")]
    worker_out = by[("twin-credit-check", "PRODUCER")]
    (event_in,) = by[("twin-fulfilment", "CONSUMER")]
    assert server.parent_span_id is None
    assert request.parent_span_id == server.span_id
    assert request_in.parent_span_id == request.span_id
    assert {p.parent_span_id for p in worker_out} == {request_in.span_id}
    assert {reply_in.parent_span_id, event_in.parent_span_id} == {p.span_id for p in worker_out}
    assert len(spans) == 9, sorted((s.service, s.name) for s in spans)


async def test_twin_dead_letters_a_poison_message_with_its_reason(
    twin_amqp_url: str, tmp_path: Path
) -> None:
    db_env = {"DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/twin.db"}
    twin = start_twin(UNTRACED, twin_amqp_url, db_env, tmp_path)
    try:
        connection = await aio_pika.connect(twin_amqp_url)
        try:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await channel.get_exchange(topology.RESERVATIONS.name)
            await exchange.publish(
                aio_pika.Message(b'{"version": 2}', content_type="application/json"),
                topology.RESERVATION_REQUESTED,
                mandatory=True,
            )
            dead = await channel.get_queue(topology.DEAD_LETTERS.name)
            async for attempt in eventually_async(10, every=0.05):
                with attempt:
                    message = await dead.get(fail=False)
                    assert message is not None
            assert message is not None
            assert str(message.headers[topology.DEAD_LETTER_REASON]).startswith("invalid:")
            await message.ack()
        finally:
            await connection.close()
    finally:
        twin.stop()
    assert await _query(db_env, "SELECT count(*) FROM reservations") == [(0,)]
