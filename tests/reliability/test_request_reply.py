"""Request/reply over direct reply-to, at its edges.

- A reply that comes after its call timed out, or that names a correlation id nobody is
  waiting for (or none, or a duplicate), is logged and dropped: no exception, nothing left
  pending, and the client goes on matching the next replies correctly.
- A request whose confirm never comes (a broker that blocks publishers, or is frozen) is
  answered by the publish deadline, as unconfirmed, with one copy sent, not a copy per turn;
  once the republisher holds its most, the next request is refused before it is published.
- With two API processes and two workers, every reply reaches the API that asked (its
  answer is a 201, and the trace shows its own reply CONSUMER span).
- When the asking API is gone before the reply, the outcome is still recorded and any other
  API replica serves it from ``GET /reservations/{id}``.
"""

import asyncio
import json
import signal
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import aio_pika
import httpx
import pytest
import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from aiormq.exceptions import ChannelNotFoundEntity, DeliveryError
from pamqp.commands import Basic

from cli.collector import OtlpReceiver
from messaging import republisher, rpc
from messaging.messages import Message
from messaging.publisher import Publisher
from messaging.readiness import ChannelReadiness
from messaging.rpc import BrokerUnavailable, ReplyTimeout, RequestUnconfirmed, RpcClient
from messaging.topology import ExchangeSpec, Route
from tests import infra
from tests.hop import Hop
from tests.logs import capture_logs_of
from tests.stack import System
from tests.traces import REPLY_PROCESS, one, wait_for_trace
from tests.waiting import eventually, eventually_async

DROPPED = "reply dropped: late or unknown correlation id"


class Ask(Message):
    ask_id: str

    @property
    def message_id(self) -> str:
        return self.ask_id


class Answer(Message):
    """The responder's answer, carrying the correlation id it was sent with."""

    text: str
    correlation_id: str | None


# --- the client alone, against a responder the test controls -------------------------------


@dataclass
class Rig:
    client: RpcClient
    route: Route
    responder: AbstractChannel
    requests: "asyncio.Queue[AbstractIncomingMessage]"
    log: structlog.testing.LogCapture
    loop_errors: list[dict[str, Any]]

    async def reply(self, request: AbstractIncomingMessage, text: str, cid: str | None) -> None:
        assert request.reply_to
        body = Answer(text=text, correlation_id=cid).to_body()
        await self.responder.default_exchange.publish(
            aio_pika.Message(body, correlation_id=cid), routing_key=request.reply_to
        )

    async def next_request(self) -> AbstractIncomingMessage:
        return await asyncio.wait_for(self.requests.get(), 10)

    def dropped(self) -> list[str | None]:
        return [e["correlation_id"] for e in self.log.entries if e["event"] == DROPPED]

    async def wait_dropped(self, count: int) -> None:
        async for attempt in eventually_async(10, every=0.05):
            with attempt:
                assert len(self.dropped()) >= count, self.log.entries


@pytest.fixture
async def rig(amqp_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Rig]:
    """An RpcClient on the real broker (private exchange and queue in the session's vhost),
    its structlog output captured, and the event loop's unhandled errors recorded."""
    capture = capture_logs_of(monkeypatch, rpc)
    loop = asyncio.get_running_loop()
    loop_errors: list[dict[str, Any]] = []
    previous_handler = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: loop_errors.append(context))

    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        exchange = await channel.declare_exchange(
            f"rpc-edges-{uuid.uuid4().hex[:8]}", aio_pika.ExchangeType.DIRECT, auto_delete=True
        )
        responder = await connection.channel()
        queue = await responder.declare_queue(exclusive=True)
        await queue.bind(exchange.name, routing_key="ask")
        requests: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()

        async def take(message: AbstractIncomingMessage) -> None:
            requests.put_nowait(message)

        await queue.consume(take, no_ack=True)
        publisher = Publisher({exchange.name: exchange}, channel.default_exchange)
        client = RpcClient(channel, publisher, reply_timeout=3)
        await client.start()
        route = Route(ExchangeSpec(exchange.name), "ask")
        yield Rig(client, route, responder, requests, capture, loop_errors)
        await client.close()
    finally:
        await connection.close()
        loop.set_exception_handler(previous_handler)


async def _ask(rig: Rig, message_id: str) -> Answer:
    return await rig.client.call(Ask(ask_id=message_id), Answer, to=rig.route)


async def test_a_late_reply_is_logged_and_dropped(rig: Rig, caplog: pytest.LogCaptureFixture):
    with pytest.raises(ReplyTimeout):
        await _ask(rig, "late-1")
    assert rig.client.pending == 0
    request = await rig.next_request()
    assert request.message_id == "late-1"

    await rig.reply(request, "too late", request.correlation_id)
    await rig.wait_dropped(1)
    assert rig.dropped() == [request.correlation_id]
    assert rig.client.pending == 0

    # The client still matches replies: the next call gets its own answer.
    call = asyncio.create_task(_ask(rig, "on-time-1"))
    second = await rig.next_request()
    await rig.reply(second, "on time", second.correlation_id)
    answer = await call
    assert answer.text == "on time" and answer.correlation_id == second.correlation_id
    assert rig.client.pending == 0
    assert rig.loop_errors == []
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    sys.stdout.write(f"\nlate reply dropped and logged: {rig.dropped()}\n")


async def test_unknown_missing_and_duplicate_correlation_ids_are_dropped(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    call = asyncio.create_task(_ask(rig, "busy-1"))
    request = await rig.next_request()
    stranger = uuid.uuid4().hex
    # Replies on one channel arrive in order: the strangers first, then the real one, twice.
    await rig.reply(request, "not yours", stranger)
    await rig.reply(request, "no id at all", None)
    await rig.reply(request, "yours", request.correlation_id)
    await rig.reply(request, "yours again", request.correlation_id)
    answer = await call
    assert answer.text == "yours"
    await rig.wait_dropped(3)
    assert rig.dropped() == [stranger, None, request.correlation_id]
    assert rig.client.pending == 0

    # A call that only ever gets a stranger's reply times out cleanly.
    call = asyncio.create_task(_ask(rig, "busy-2"))
    request = await rig.next_request()
    await rig.reply(request, "not yours either", "f" * 32)
    with pytest.raises(ReplyTimeout):
        await call
    assert rig.client.pending == 0
    assert rig.dropped()[-1] == "f" * 32
    assert rig.loop_errors == []
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    sys.stdout.write(f"\nreplies dropped and logged: {len(rig.dropped())}\n")


P = TypeVar("P", bound=Publisher)
ASK = Route(ExchangeSpec(f"rpc-ask-{uuid.uuid4().hex[:8]}", aio_pika.ExchangeType.DIRECT), "ask")


@asynccontextmanager
async def _client_publishing_with(
    amqp_url: str, publisher: type[P]
) -> AsyncIterator[tuple[RpcClient, P, AbstractQueue]]:
    """An RpcClient on a robust connection (as the services connect) whose requests go
    through ``publisher`` to :data:`ASK`: an exchange of the test's, bound to one queue."""
    connection = await aio_pika.connect_robust(amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        exchange = await channel.declare_exchange(
            ASK.exchange.name, aio_pika.ExchangeType.DIRECT, auto_delete=True
        )
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange.name, routing_key=ASK.routing_key)
        made = publisher({exchange.name: exchange}, channel.default_exchange)
        client = RpcClient(channel, made, reply_timeout=3)
        await client.start()
        yield client, made, queue
    finally:
        await connection.close()


class _ConfirmNeverComes(Publisher):
    """Sends each request, then waits for a confirm that never comes: what the client sees
    of a broker that blocks publishers (a memory or disk alarm) or is frozen."""

    sent = 0

    async def publish(self, message: Message, to: Route, **options: Any) -> None:
        await super().publish(message, to, **options)
        self.sent += 1
        async with asyncio.timeout_at(options.get("deadline")):  # as a real confirm's wait
            await asyncio.Event().wait()


async def test_a_confirm_that_never_comes_is_answered_by_the_deadline(
    amqp_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rpc, "PUBLISH_TIMEOUT", 0.5)
    monkeypatch.setattr(republisher, "HOLD_AT_MOST", 1)
    capture = capture_logs_of(monkeypatch, rpc, republisher)
    async with _client_publishing_with(amqp_url, _ConfirmNeverComes) as (client, publisher, queue):
        with pytest.raises(RequestUnconfirmed):
            async with asyncio.timeout(5):  # it used to send a copy every 50 ms, unanswered
                await client.call(Ask(ask_id="stalled-1"), Answer, to=ASK)
        assert publisher.sent == 1  # the call's one copy; the republisher takes it from here
        copy = await queue.get(timeout=5)
        assert copy.message_id == "stalled-1"
        assert client.republisher.in_progress == 1
        # Full (HOLD_AT_MOST, 1 here): the next call is refused before it publishes anything.
        sent = publisher.sent  # the republisher's own copy (waiting for its confirm) included
        with pytest.raises(BrokerUnavailable, match="1 requests still wait"):
            async with asyncio.timeout(0.2):
                await client.call(Ask(ask_id="stalled-2"), Answer, to=ASK)
        assert publisher.sent == sent
        await client.close()  # gives up on the republishing, bounded
        assert client.republisher.in_progress == 0
        gave_up = [e for e in capture.entries if e["log_level"] == "error"]
        assert [e["message_id"] for e in gave_up] == ["stalled-1"], capture.entries


class _ConfirmLostThenRefused(Publisher):
    """The first copy is queued, but its confirm is lost with the connection; every copy after
    it is refused (a nack: the queue went over a ``reject-publish`` limit meanwhile)."""

    sent = 0

    async def publish(self, message: Message, to: Route, **options: Any) -> None:
        self.sent += 1
        if self.sent == 1:
            await super().publish(message, to, **options)
            raise ConnectionResetError("the connection closed before the confirm came")
        raise DeliveryError(None, Basic.Nack(delivery_tag=self.sent))


async def test_a_copy_refused_after_one_whose_confirm_was_lost_is_no_503(
    amqp_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 503 says nothing was queued, so a client's retry cannot reserve twice. With a first
    copy queued but unconfirmed, a refusal of the next one answered 503, and the retry was
    charged again (a fault campaign). It is a 202, and the republisher keeps trying."""
    capture = capture_logs_of(monkeypatch, rpc, republisher)
    async with _client_publishing_with(amqp_url, _ConfirmLostThenRefused) as (
        client,
        publisher,
        queue,
    ):
        with pytest.raises(RequestUnconfirmed):
            async with asyncio.timeout(5):
                await client.call(Ask(ask_id="refused-1"), Answer, to=ASK)
        copy = await queue.get(timeout=5)  # the first copy: queued all along
        assert copy.message_id == "refused-1"
        assert publisher.sent >= 2
        assert client.republisher.in_progress == 1
        await client.close()
        gave_up = [e for e in capture.entries if e["log_level"] == "error"]
        assert [e["message_id"] for e in gave_up] == ["refused-1"], capture.entries


async def test_a_deadline_already_past_finds_an_open_channel_not_ready(amqp_url: str) -> None:
    connection = await aio_pika.connect_robust(amqp_url)
    try:
        readiness = ChannelReadiness(await connection.channel())
        loop = asyncio.get_running_loop()
        assert await readiness.wait(loop.time() + 1)
        # RobustChannel.ready() never suspends on an open channel, so a timeout alone never fired.
        assert not await readiness.wait(loop.time() - 0.001)
    finally:
        await connection.close()


async def test_a_channel_is_restored_again_after_a_cut_and_after_a_channel_error(
    broker_behind_a_hop: tuple[Hop, str],
) -> None:
    """``/readyz`` reads :attr:`ChannelReadiness.restored`: not restored from a channel's close
    until aio-pika has reopened it, so that a refused restore's moment open is not ready. Both
    ways a channel comes back must count, or the API would stay not ready for good: a cut
    connection restored, and a channel error (the broker closes the channel) reopened."""
    hop, through_hop = broker_behind_a_hop
    connection = await aio_pika.connect_robust(through_hop)
    channel = await connection.channel()
    readiness = ChannelReadiness(channel)
    readiness.watch()
    try:
        assert readiness.restored
        await hop.down()
        async for attempt in eventually_async(5, every=0.05):
            with attempt:
                assert not readiness.restored
        await hop.up()
        async for attempt in eventually_async(15, every=0.1):
            with attempt:
                assert readiness.restored

        underlay = await channel.get_underlay_channel()
        with pytest.raises(ChannelNotFoundEntity):  # 404: the broker closes the channel
            await underlay.exchange_declare(f"missing-{uuid.uuid4()}", passive=True)
        async for attempt in eventually_async(10, every=0.05):
            with attempt:
                assert await channel.get_underlay_channel() is not underlay
                assert readiness.restored
    finally:
        readiness.unwatch()
        await connection.close()


# --- real processes -------------------------------------------------------------------------

CREDITS, PRICE = 1_000, 10


def _log_events(process: Any, event: str | None) -> list[dict[str, Any]]:
    """The JSON log lines of a process, all of them or those with this ``event``."""
    lines = [json.loads(line) for line in process.log().splitlines() if line.startswith("{")]
    return [line for line in lines if event is None or line.get("event") == event]


def test_every_reply_reaches_the_api_that_asked(
    make_system: Callable[[], System], receiver: OtlpReceiver
) -> None:
    system = make_system()
    system.seed({"rita": CREDITS}, {"pen": PRICE})
    workers = [system.start_worker("workers.credit_check", name=f"credit-check-{n}") for n in "ab"]
    ports = [infra.free_port(), infra.free_port()]
    # A reply that went to the wrong API would leave its caller waiting out the whole
    # timeout and answering 202; the timeout is generous so that only that can cause a 202.
    # Each API has its own service name, so its spans say which one handled what.
    apis = [
        system.start_api(
            port,
            f"api-{n}",
            RESERVATION_REPLY_TIMEOUT="20",
            OTEL_SERVICE_NAME=f"reservations-api-{n}",
        )
        for n, port in zip("ab", ports, strict=True)
    ]
    urls = [f"http://127.0.0.1:{port}" for port in ports]

    def reserve(i: int) -> tuple[int, httpx.Response]:
        api = i % 2
        body = {"username": "rita", "item_id": "pen"}
        return api, httpx.post(f"{urls[api]}/reservations", json=body, timeout=30)

    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(reserve, range(100)))

    statuses = Counter((asked, r.status_code) for asked, r in answers)
    assert statuses == {(0, 201): 50, (1, 201): 50}, {r.status_code: r.text for _, r in answers}
    left = sorted(r.json()["credits_left"] for _, r in answers)
    assert left == list(range(CREDITS - 100 * PRICE, CREDITS, PRICE))  # one serial chain
    for asked, response in answers:  # and the other replica reads the same final state
        reservation_id = response.json()["reservation_id"]
        other = httpx.get(f"{urls[1 - asked]}/reservations/{reservation_id}", timeout=10)
        assert other.json()["status"] == "confirmed"
    assert httpx.get(f"{urls[0]}/users/rita", timeout=10).json()["credits"] == 0

    for process in apis:
        assert _log_events(process, DROPPED) == [], process.log()[-3_000:]
    # In every trace, the reply was consumed by the API whose SERVER span took the request.
    traced = 0
    for asked, response in answers:
        service = f"reservations-api-{'ab'[asked]}"
        spans = wait_for_trace(
            receiver.store, response.json()["trace_id"], {"POST /reservations", REPLY_PROCESS}
        )
        one(spans, "POST /reservations", service, "SERVER")
        one(spans, REPLY_PROCESS, service, "CONSUMER")
        traced += 1
    handled = [len(_log_events(worker, "credit checked")) for worker in workers]
    sys.stdout.write(
        f"\n2 APIs x 2 workers: answers {dict(statuses)}; handled per worker {handled}; "
        f"replies consumed by the asking API (from the traces): {traced}/{len(answers)}\n"
    )
    assert sum(handled) == 100 and min(handled) > 0


def test_the_final_state_outlives_the_api_that_asked(make_system: Callable[[], System]) -> None:
    system = make_system()
    system.seed({"rita": CREDITS}, {"pen": PRICE})
    port_a, port_b = infra.free_port(), infra.free_port()
    # No worker yet: the request waits in the queue, and API A gives up after 1 s.
    api_a = system.start_api(port_a, "api-a", RESERVATION_REPLY_TIMEOUT="1")
    system.start_api(port_b, "api-b")
    url_a, url_b = f"http://127.0.0.1:{port_a}", f"http://127.0.0.1:{port_b}"

    asked = httpx.post(
        f"{url_a}/reservations", json={"username": "rita", "item_id": "pen"}, timeout=10
    )
    assert asked.status_code == 202, asked.text
    pending = asked.json()
    assert pending["status"] == "pending"
    location = asked.headers["location"]
    assert location == f"/reservations/{pending['reservation_id']}"
    assert httpx.get(f"{url_b}{location}", timeout=10).status_code == 404  # not processed yet

    assert api_a.stop() in (0, -signal.SIGTERM), api_a.log()
    system.running.remove(api_a)
    worker = system.start_worker("workers.credit_check")

    for attempt in eventually(20, every=0.1):
        with attempt:
            final = httpx.get(f"{url_b}{location}", timeout=10)
            assert final.status_code == 200, final.text
    view = final.json()
    assert view["status"] == "confirmed"
    assert (view["price"], view["credits_left"]) == (PRICE, CREDITS - PRICE)
    assert httpx.get(f"{url_b}/users/rita", timeout=10).json()["credits"] == CREDITS - PRICE

    # The worker replied into the void (the asking channel is gone) and carried on.
    story = [
        line["event"]
        for line in _log_events(worker, None)
        if pending["reservation_id"] in (line.get("reservation_id"), line.get("message_id"))
    ]
    assert story == ["credit checked"], story
    assert "handler failed" not in worker.log()
    sys.stdout.write(f"\n202 from API A, A stopped, final state from API B: {view['status']}\n")
