"""What an incoming request's trace headers can put on the broker: bounded, or nothing."""

import uuid
from collections.abc import AsyncIterator

import aio_pika
import pytest
from aio_pika.abc import AbstractQueue

from messaging import topology
from store.settings import StoreSettings
from tests.system import configure_env, purge_work_queues, running_api

pytestmark = pytest.mark.integration


@pytest.fixture
async def spy(amqp_url: str) -> AsyncIterator[AbstractQueue]:
    """A private queue that receives a copy of every reservation.requested message."""
    connection = await aio_pika.connect(amqp_url)
    channel = await connection.channel()
    await topology.declare(channel)
    queue = await channel.declare_queue(f"spy-{uuid.uuid4().hex[:8]}", exclusive=True)
    await queue.bind(topology.RESERVATIONS.name, topology.RESERVATION_REQUESTED)
    yield queue
    await connection.close()
    await purge_work_queues(amqp_url)  # no worker ran: drop the requests we caused


@pytest.mark.parametrize(
    ("headers", "expected_baggage"),
    [
        ({"baggage": "tenant=acme"}, "tenant=acme"),
        ({"baggage": "user=" + "x" * 20_000}, None),
        ({"baggage": ",".join(f"k{i}=v" for i in range(500))}, None),
    ],
    ids=["small", "oversized", "many-pairs"],
)
async def test_incoming_baggage_reaches_amqp_headers_only_when_small(
    amqp_url: str,
    store_settings: StoreSettings,
    monkeypatch: pytest.MonkeyPatch,
    spy: AbstractQueue,
    headers: dict[str, str],
    expected_baggage: str | None,
) -> None:
    configure_env(monkeypatch, amqp_url, store_settings)
    monkeypatch.setenv("RESERVATION_REPLY_TIMEOUT", "0.2")
    async with running_api() as client:
        response = await client.post(
            "/reservations", json={"username": "alice", "item_id": "book-1"}, headers=headers
        )
    assert response.status_code == 202
    message = await spy.get(timeout=5)
    assert message is not None
    await message.ack()
    assert message.headers.get("baggage") == expected_baggage
    assert len(str(message.headers)) < 2_000
    assert str(message.headers["traceparent"]).split("-")[1] == response.json()["trace_id"]


@pytest.mark.parametrize(
    ("version", "continued"),
    [("cc", True), ("ff", False)],
    ids=["future-version-continued", "version-ff-refused"],
)
async def test_a_future_traceparent_version_is_continued_and_version_ff_is_not(
    amqp_url: str,
    store_settings: StoreSettings,
    monkeypatch: pytest.MonkeyPatch,
    spy: AbstractQueue,
    version: str,
    continued: bool,
) -> None:
    configure_env(monkeypatch, amqp_url, store_settings)
    monkeypatch.setenv("RESERVATION_REPLY_TIMEOUT", "0.2")
    trace_id, parent_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    traceparent = f"{version}-{trace_id}-{parent_id}-01-extra"
    async with running_api() as client:
        response = await client.post(
            "/reservations",
            json={"username": "alice", "item_id": "book-1"},
            headers={"traceparent": traceparent},
        )
    assert response.status_code == 202
    message = await spy.get(timeout=5)
    assert message is not None
    await message.ack()
    sent = str(message.headers["traceparent"]).split("-")
    assert sent[0] == "00"  # what we send onwards is the version we speak
    assert sent[1] == response.json()["trace_id"]
    assert (sent[1] == trace_id) is continued, (traceparent, sent)
