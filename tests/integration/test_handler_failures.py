"""A handler that raises: recorded on the span, retried a bounded number of times, then
dead-lettered with its reason, in the same trace. Real broker, fake ledger (our own port)."""

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from uuid import UUID

import aio_pika
import aiormq
import pytest
from aio_pika.abc import AbstractChannel
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from domain.reservations import Reservation
from messaging import delivery, subscriber, topology
from messaging.broker import Broker
from messaging.connection import open_channel
from messaging.delivery import MAX_ATTEMPTS
from messaging.envelope import envelope
from messaging.handlers import Handled, NotAnAttempt, Publication
from messaging.messages import ReservationConfirmed, ReservationRequested
from messaging.metered import MessageMeter
from messaging.metrics import MessagingMetrics
from messaging.publisher import Publisher
from messaging.refusals import ChannelReplaced
from messaging.retry import RETURNS_LIMIT
from tests.hop import Hop
from tests.logs import capture_logs_of
from tests.spans import aio_pika_traced_by, in_memory_provider
from tests.system import channel_of_its_own, get_within
from tests.waiting import eventually_async
from workers.credit_check.handler import credit_check

pytestmark = pytest.mark.integration


class ExplodingLedger:
    def __init__(self) -> None:
        self.calls = 0

    async def reserve(
        self, reservation_id: UUID, username: str, item_id: str, trace_id: str | None = None
    ) -> Reservation:
        self.calls += 1
        raise RuntimeError("the database is on fire")


@pytest.fixture
async def channel(amqp_url: str) -> AsyncIterator[AbstractChannel]:
    connection = await aio_pika.connect_robust(amqp_url)
    channel, declared = await open_channel(connection, prefetch=10)
    for queue in declared.queues.values():
        await queue.purge()
    yield channel
    await connection.close()


async def test_handler_exception_is_retried_then_dead_lettered_with_reason(
    channel: AbstractChannel, monkeypatch: pytest.MonkeyPatch
) -> None:
    capture = capture_logs_of(monkeypatch, delivery)
    provider, exporter = in_memory_provider()
    with aio_pika_traced_by(provider):
        await _fail_three_times(channel, provider, exporter)
    # A WARNING line per retry, naming the error (the span has the stack trace); the ERROR,
    # with the traceback, once: when the message is dead-lettered.
    retries, last = capture.entries[:-1], capture.entries[-1]
    assert [e["log_level"] for e in retries] == ["warning"] * (MAX_ATTEMPTS - 1), retries
    assert all(e["error"].startswith("RuntimeError(") for e in retries), retries
    assert last["log_level"] == "error" and "dead-lettering" in last["event"], last


async def _fail_three_times(
    channel: AbstractChannel, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    declared = await topology.declare(channel)
    broker = Broker(channel, declared, Publisher.on(channel, declared))
    ledger = ExplodingLedger()
    subscription = await broker.subscribe(
        topology.CREDIT_CHECK, ReservationRequested, credit_check(ledger)
    )
    request = ReservationRequested(reservation_id=uuid.uuid4(), username="alice", item_id="b")
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("test request") as root:
        await broker.publish(request, topology.RESERVATION_REQUESTS)
    dead = await get_within(declared.queues[topology.DEAD_LETTERS.name], 15)
    assert await subscription.stop(5)
    await dead.ack()
    assert dead.headers[topology.DEAD_LETTER_REASON] == (
        f"handler failed {MAX_ATTEMPTS} times: RuntimeError: the database is on fire"
    )
    # Where it was first published, although its last attempt came through the default
    # exchange (messaging.retry): an operator replays it there.
    assert dead.routing_key == topology.RESERVATION_REQUESTED
    assert dead.headers[topology.ORIGINAL_EXCHANGE] == topology.RESERVATIONS.name
    assert dead.headers[topology.ORIGINAL_ROUTING_KEY] == topology.RESERVATION_REQUESTED
    assert topology.ATTEMPT_HEADER not in dead.headers  # a replay starts at its first attempt
    assert ledger.calls == MAX_ATTEMPTS

    async for attempt in eventually_async(5, every=0.05):
        with attempt:  # the last consumer span ends just after its dead-letter publish
            spans = exporter.get_finished_spans()
            consumers = [s for s in spans if s.kind is SpanKind.CONSUMER]
            assert len(consumers) == MAX_ATTEMPTS
    trace_id = root.get_span_context().trace_id
    for span in consumers:
        assert span.context.trace_id == trace_id
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes is not None and span.attributes["error.type"] == "RuntimeError"
        assert [e.name for e in span.events] == ["exception"]
    # Each retry is a copy published to the queue itself (messaging.retry), from inside the
    # CONSUMER span that failed, and the next CONSUMER span is its child: one trace throughout.
    queue = topology.CREDIT_CHECK.name
    retries = sorted(
        (s for s in spans if s.name == f"publish {queue}"), key=lambda s: s.start_time or 0
    )
    assert len(retries) == MAX_ATTEMPTS - 1
    for failed, retried, next_attempt in zip(consumers, retries, consumers[1:], strict=False):
        assert retried.parent is not None and retried.parent.span_id == failed.context.span_id
        assert next_attempt.parent is not None
        assert next_attempt.parent.span_id == retried.context.span_id
    dlx_publish = [s for s in spans if s.name == "publish reservations.dlx:reservation.requested"]
    assert len(dlx_publish) == 1
    assert dlx_publish[0].parent is not None
    assert dlx_publish[0].parent.span_id == consumers[-1].context.span_id


class SpanEndedUnderIt(ExplodingLedger):
    """Fails after its CONSUMER span has ended, as when a connection drops under a handler:
    aio-pika ends the span with the cancelled consumer task, and the shielded handler runs on."""

    async def reserve(
        self, reservation_id: UUID, username: str, item_id: str, trace_id: str | None = None
    ) -> Reservation:
        trace.get_current_span().end()
        return await super().reserve(reservation_id, username, item_id, trace_id)


async def test_a_failure_after_its_span_ended_is_logged_not_written_to_the_ended_span(
    channel: AbstractChannel, caplog: pytest.LogCaptureFixture
) -> None:
    """A fault campaign's worker logged "Setting attribute on ended span" dozens of times
    after connection drops: the handler's failure went to a span already exported."""
    caplog.set_level(logging.WARNING, logger="opentelemetry.sdk.trace")
    declared = await topology.declare(channel)
    broker = Broker(channel, declared, Publisher.on(channel, declared))
    provider, _ = in_memory_provider()
    with aio_pika_traced_by(provider):
        subscription = await broker.subscribe(
            topology.CREDIT_CHECK, ReservationRequested, credit_check(SpanEndedUnderIt())
        )
        request = ReservationRequested(reservation_id=uuid.uuid4(), username="alice", item_id="b")
        await broker.publish(request, topology.RESERVATION_REQUESTS)
        dead = await get_within(declared.queues[topology.DEAD_LETTERS.name], 15)
        assert await subscription.stop(5)
    await dead.ack()
    assert "RuntimeError: the database is on fire" in str(dead.headers[topology.DEAD_LETTER_REASON])
    # (Its "Calling end() on an ended span" is this test's doing: the instrumentation ends
    # the span it started, which the test's ledger ended first.)
    written = [r.getMessage() for r in caplog.records if "ended span" in r.getMessage()]
    assert [m for m in written if not m.startswith("Calling end()")] == []


async def test_returns_of_a_message_use_up_none_of_its_attempts(
    channel: AbstractChannel, amqp_url: str
) -> None:
    """Before RabbitMQ 4.3, a quorum queue counts every return of a message in
    ``x-delivery-count``: a worker killed, stopped or cut off while holding it. Only the
    handler's failures count as attempts (messaging.retry): a request returned MAX_ATTEMPTS
    times, whose handler then fails once, is retried, not dead-lettered."""
    declared = await topology.declare(channel)
    broker = Broker(channel, declared, Publisher.on(channel, declared))
    request = ReservationRequested(reservation_id=uuid.uuid4(), username="alice", item_id="b")
    await broker.publish(request, topology.RESERVATION_REQUESTS)
    for _ in range(MAX_ATTEMPTS):  # taken, then returned unsettled as its connection closes
        holder = await aio_pika.connect(amqp_url)
        queue = await (await holder.channel()).get_queue(topology.CREDIT_CHECK.name)
        await get_within(queue, 5)
        await holder.close()
    assert await _attempts_of_a_handler_failing_once(broker) == [1, 2]
    dead = await declared.queues[topology.DEAD_LETTERS.name].get(fail=False)
    assert dead is None, dead.headers


async def test_a_handler_that_could_not_run_is_retried_as_the_same_attempt(
    channel: AbstractChannel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A NotAnAttempt (workers.database_outage: the database did not answer all the while the
    message was held) sends the message back as the same attempt, on the last attempt too,
    however often: an outage of any length parks nothing. Before, it counted, and an outage
    past about a minute dead-lettered every message in flight."""
    monkeypatch.setattr(delivery, "RETRY_BACKOFF", 0.01)
    capture = capture_logs_of(monkeypatch, delivery)
    declared = await topology.declare(channel)
    broker = Broker(channel, declared, Publisher.on(channel, declared))
    request = ReservationRequested(reservation_id=uuid.uuid4(), username="alice", item_id="b")
    # On its last attempt already, as a worker's retry: a counted failure would dead-letter it.
    await _as_a_workers_retry(channel, request, MAX_ATTEMPTS)
    handled: list[int] = []
    outage_lasts = 2 * MAX_ATTEMPTS

    async def database_down_for_a_while(message: ReservationRequested) -> None:
        handled.append(delivery.current_delivery().attempt)
        if len(handled) <= outage_lasts:
            raise NotAnAttempt("the database did not answer within 30 s") from OSError("refused")

    subscription = await broker.subscribe(
        topology.CREDIT_CHECK, ReservationRequested, database_down_for_a_while
    )
    async for attempt in eventually_async(15, every=0.05):
        with attempt:
            assert len(handled) == outage_lasts + 1
    assert await subscription.stop(5)
    assert handled == [MAX_ATTEMPTS] * (outage_lasts + 1)
    dead = await declared.queues[topology.DEAD_LETTERS.name].get(fail=False)
    assert dead is None, dead.headers
    retries = [e for e in capture.entries if "same attempt" in e["event"]]
    assert len(retries) == outage_lasts, capture.entries
    assert retries[0]["error"] == "OSError('refused')"  # the cause, not the wrapper


async def test_an_event_refused_past_its_hold_sends_its_delivery_back_as_the_same_attempt(
    channel: AbstractChannel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A downstream queue that refuses (``reject-publish``, full) for longer than the
    publisher's hold: the delivery goes back as the same attempt and its event is held again,
    until the queue takes it. It used to fail the handler, and a refusal of a minute and a
    half dead-lettered the requests, charged and never fulfilled."""
    monkeypatch.setattr(delivery, "RETRY_BACKOFF", 0.01)
    capture = capture_logs_of(monkeypatch, delivery)
    declared = await topology.declare(channel)
    name = f"refusing-{uuid.uuid4().hex[:8]}"
    exchange = await channel.declare_exchange(name, aio_pika.ExchangeType.DIRECT, auto_delete=True)
    full = await channel.declare_queue(
        name, exclusive=True, arguments={"x-max-length": 1, "x-overflow": "reject-publish"}
    )
    await full.bind(exchange, routing_key="confirmed")
    await exchange.publish(aio_pika.Message(b"filler"), routing_key="confirmed")
    publisher = Publisher(
        {**declared.exchanges, name: exchange}, channel.default_exchange, channel=channel
    )
    publisher.hold = 0.5
    broker = Broker(channel, declared, publisher)
    request = ReservationRequested(reservation_id=uuid.uuid4(), username="alice", item_id="b")
    confirmed = ReservationConfirmed(
        reservation_id=request.reservation_id, username="alice", item_id="b", price=10
    )
    downstream = topology.Route(
        topology.ExchangeSpec(name, aio_pika.ExchangeType.DIRECT), "confirmed"
    )
    await _as_a_workers_retry(channel, request, MAX_ATTEMPTS)  # on its last attempt already
    attempts: list[int] = []

    async def decided(message: ReservationRequested) -> Handled:
        attempts.append(delivery.current_delivery().attempt)
        return Handled(events=(Publication(confirmed, downstream),))

    subscription = await broker.subscribe(topology.CREDIT_CHECK, ReservationRequested, decided)
    async for attempt in eventually_async(20, every=0.05):
        with attempt:
            assert len(attempts) >= 3  # refused past the hold, three times over
    await full.purge()  # room again: the event held now is taken
    event = await get_within(full, 10)
    assert ReservationConfirmed.from_body(event.body) == confirmed
    assert await subscription.stop(5)
    assert set(attempts) == {MAX_ATTEMPTS}
    assert await declared.queues[topology.DEAD_LETTERS.name].get(fail=False) is None
    retries = [e for e in capture.entries if "same attempt" in e["event"]]
    assert len(retries) == len(attempts) - 1, retries  # the last one's event was taken
    assert all("Basic.Nack" in e["error"] for e in retries), retries


@pytest.mark.parametrize("deleted", ["queue", "binding"])
async def test_a_dead_letter_is_kept_after_an_operator_deleted_its_queue(
    channel: AbstractChannel, amqp_url: str, deleted: str
) -> None:
    """RabbitMQ drops a dead letter it cannot route. With the dead-letter queue (or its
    binding) deleted from outside, a fault campaign's dead letters were lost, every one, until
    the services restarted: nothing declared the queue again while the channel lived."""
    declared = await topology.declare(channel)
    broker = Broker(channel, declared, Publisher.on(channel, declared))
    operator = await aio_pika.connect(amqp_url)
    try:
        operator_channel = await operator.channel()
        if deleted == "queue":
            await operator_channel.queue_delete(topology.DEAD_LETTERS.name)
        else:
            dead_letters = await operator_channel.get_queue(topology.DEAD_LETTERS.name)
            await dead_letters.unbind(topology.DEAD_LETTER_EXCHANGE.name, "#")

        async def never(message: ReservationRequested) -> None:
            raise AssertionError("a poison message never reaches the handler")

        subscription = await broker.subscribe(topology.CREDIT_CHECK, ReservationRequested, never)
        await channel.default_exchange.publish(
            aio_pika.Message(b"{not json", content_type="application/json"),
            routing_key=topology.CREDIT_CHECK.name,
        )
        retried = (AssertionError, aiormq.exceptions.AMQPError)
        async for attempt in eventually_async(10, every=0.1, retry_on=retried):
            with attempt:  # a channel of its own each time: a declare of no queue closes it
                probe = await operator.channel()
                restored = await probe.declare_queue(topology.DEAD_LETTERS.name, passive=True)
                assert restored.declaration_result.message_count == 1
        dead = await get_within(restored, 5)
        assert await subscription.stop(5)
        await dead.ack()
    finally:
        await operator.close()
    assert dead.body == b"{not json"
    assert str(dead.headers[topology.DEAD_LETTER_REASON]).startswith("invalid: ")


@pytest.mark.parametrize("header", ["3", True, 0, 2.0], ids=["text", "bool", "zero", "float"])
async def test_an_attempt_header_that_is_not_a_positive_integer_counts_as_the_first(
    channel: AbstractChannel, header: object
) -> None:
    declared = await topology.declare(channel)
    broker = Broker(channel, declared, Publisher.on(channel, declared))
    request = ReservationRequested(reservation_id=uuid.uuid4(), username="alice", item_id="b")
    await _as_a_workers_retry(channel, request, header)
    attempts: list[int] = []

    async def record(message: ReservationRequested) -> None:
        attempts.append(delivery.current_delivery().attempt)

    subscription = await broker.subscribe(topology.CREDIT_CHECK, ReservationRequested, record)
    async for attempt in eventually_async(10, every=0.05):
        with attempt:
            assert attempts == [1]
    assert await subscription.stop(5)


async def test_a_publishers_own_attempt_and_returns_headers_count_for_nothing(
    channel: AbstractChannel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a worker's copy (through the default exchange) carries a worker's counts, and
    only a redelivery the broker's. A request published to the topic exchange with the
    bookkeeping of one on its last attempt (a dead letter replayed with its headers, say) was
    dead-lettered at its first failure; with ``x-returned`` at the limit, at its third
    return."""
    monkeypatch.setattr(delivery, "RETRY_BACKOFF", 0.01)
    declared = await topology.declare(channel)
    broker = Broker(channel, declared, Publisher.on(channel, declared))
    request = ReservationRequested(reservation_id=uuid.uuid4(), username="alice", item_id="b")
    crafted = {
        topology.ATTEMPT_HEADER: MAX_ATTEMPTS,
        topology.RETURNED_HEADER: RETURNS_LIMIT,
        "x-delivery-count": RETURNS_LIMIT,
    }
    route = topology.RESERVATION_REQUESTS
    await declared.exchanges[route.exchange.name].publish(
        envelope(request.to_body(), persistent=True, headers=crafted), route.routing_key
    )
    assert await _attempts_of_a_handler_failing_once(broker) == [1, 2]
    dead = await declared.queues[topology.DEAD_LETTERS.name].get(fail=False)
    assert dead is None, dead.headers


async def _attempts_of_a_handler_failing_once(broker: Broker) -> list[int]:
    """The attempt numbers a credit-check handler that fails the first time sees, once it
    has been called twice."""
    attempts: list[int] = []

    async def fails_once(message: ReservationRequested) -> None:
        attempts.append(delivery.current_delivery().attempt)
        if len(attempts) == 1:
            raise RuntimeError("a database blip")

    subscription = await broker.subscribe(topology.CREDIT_CHECK, ReservationRequested, fails_once)
    async for attempt in eventually_async(10, every=0.05):
        with attempt:
            assert len(attempts) == 2
    assert await subscription.stop(5)
    return attempts


async def _as_a_workers_retry(
    channel: AbstractChannel, request: ReservationRequested, attempt: object
) -> None:
    """Publish ``request`` as a worker's retry would be: to its queue through the default
    exchange, with ``attempt`` in its attempt header."""
    await channel.default_exchange.publish(
        envelope(request.to_body(), persistent=True, headers={topology.ATTEMPT_HEADER: attempt}),
        topology.CREDIT_CHECK.name,
    )


async def test_failed_deliveries_are_counted_with_their_error_type(
    channel: AbstractChannel,
) -> None:
    """No tracer at all (as for an unsampled trace): the meter still counts every delivery."""
    reader = InMemoryMetricReader()
    meter = MessageMeter(MessagingMetrics(MeterProvider(metric_readers=[reader])))
    declared = await topology.declare(channel)
    broker = Broker(channel, declared, Publisher.on(channel, declared))
    broker.publisher.meter = meter
    subscription = await broker.subscribe(
        topology.CREDIT_CHECK, ReservationRequested, credit_check(ExplodingLedger())
    )
    request = ReservationRequested(reservation_id=uuid.uuid4(), username="alice", item_id="b")
    await broker.publish(request, topology.RESERVATION_REQUESTS)
    dead = await get_within(declared.queues[topology.DEAD_LETTERS.name], 15)
    assert await subscription.stop(5)
    await dead.ack()

    def counts(name: str) -> dict[tuple[object, object], float]:
        data = reader.get_metrics_data()
        assert data is not None
        return {
            (attrs.get("messaging.destination.name"), attrs.get("error.type")): point.value
            for rm in data.resource_metrics
            for sm in rm.scope_metrics
            for metric in sm.metrics
            if metric.name == name
            for point in metric.data.data_points
            if isinstance(point, NumberDataPoint)
            for attrs in [dict(point.attributes or {})]
        }

    # The retries come through the default exchange, straight to the queue (messaging.retry).
    consumed, retried = "reservations:reservation.requested:credit-check", "credit-check"
    assert counts("messaging.client.consumed.messages") == {
        (consumed, "RuntimeError"): 1,
        (retried, "RuntimeError"): MAX_ATTEMPTS - 1,
    }
    assert counts("messaging.client.sent.messages") == {
        ("reservations:reservation.requested", None): 1,
        (retried, None): MAX_ATTEMPTS - 1,
        ("reservations.dlx:reservation.requested", None): 1,
    }


class StalledLedger:
    """Raises once ``release`` is set; says when it has started."""

    def __init__(self) -> None:
        self.started, self.release = asyncio.Event(), asyncio.Event()

    async def reserve(
        self, reservation_id: UUID, username: str, item_id: str, trace_id: str | None = None
    ) -> Reservation:
        self.started.set()
        await self.release.wait()
        raise RuntimeError("the database is on fire")


async def test_a_handler_outliving_its_channel_still_ends_inside_its_consumer_span(
    amqp_url: str,
) -> None:
    """The channel closes under a delivery (a broker connection drop): the handler is shielded
    and finishes, and the CONSUMER span stays open until it has, so its failure is recorded
    there instead of on an ended span."""
    provider, exporter = in_memory_provider()
    connection = await aio_pika.connect(amqp_url)
    try:
        channel, declared = await open_channel(connection, prefetch=10)
        for queue in declared.queues.values():
            await queue.purge()
        with aio_pika_traced_by(provider):
            broker = Broker(channel, declared, Publisher.on(channel, declared))
            ledger = StalledLedger()
            await broker.subscribe(
                topology.CREDIT_CHECK, ReservationRequested, credit_check(ledger)
            )
            request = ReservationRequested(reservation_id=uuid.uuid4(), username="a", item_id="b")
            await broker.publish(request, topology.RESERVATION_REQUESTS)
            async with asyncio.timeout(10):
                await ledger.started.wait()
            await channel.close()  # cancels the channel's consumer tasks, as a drop does
            ledger.release.set()
            async for attempt in eventually_async(5, every=0.05):
                with attempt:
                    consumers = [
                        s for s in exporter.get_finished_spans() if s.kind is SpanKind.CONSUMER
                    ]
                    assert len(consumers) == 1
                    assert [e.name for e in consumers[0].events] == ["exception"], [
                        (e.name, dict(e.attributes or {})) for e in consumers[0].events
                    ]
            span = consumers[0]
            assert span.status.status_code is StatusCode.ERROR
            assert span.attributes is not None and span.attributes["error.type"] == "RuntimeError"
    finally:
        await connection.close()
        async with await aio_pika.connect(amqp_url) as cleanup:
            _, declared = await open_channel(cleanup)
            for queue in declared.queues.values():
                await queue.purge()


@pytest.mark.parametrize("stop_first", [True, False], ids=["after-a-stop", "a-drop"])
async def test_a_stuck_handler_never_holds_the_connection_open(
    amqp_url: str, stop_first: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A graceful stop gives up after its timeout, and closing the connection then does not
    wait for the handler; a drop (a close without a stop) waits HANDLER_GRACE at most. (Only
    the bound is asserted: whether aiormq's close awaits the cancelled consumer task at all
    depends on where that task is when the close comes.) After a stop the grace is a minute,
    so waiting it out would fail the 10 s bound."""
    grace = 60.0 if stop_first else 1.0
    monkeypatch.setattr(subscriber, "HANDLER_GRACE", grace)
    connection = await aio_pika.connect_robust(amqp_url)
    channel, declared = await open_channel(connection, prefetch=10)
    for queue in declared.queues.values():
        await queue.purge()
    broker = Broker(channel, declared, Publisher.on(channel, declared))
    ledger = StalledLedger()  # stuck: only the clean-up releases it
    subscription = await broker.subscribe(
        topology.CREDIT_CHECK, ReservationRequested, credit_check(ledger)
    )
    request = ReservationRequested(reservation_id=uuid.uuid4(), username="a", item_id="b")
    await broker.publish(request, topology.RESERVATION_REQUESTS)
    async with asyncio.timeout(10):
        await ledger.started.wait()
    if stop_first:
        assert not await subscription.stop(0.2)  # the handler is still in flight
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(10):  # an unbounded wait would be for the handler, for ever
        await connection.close()
    assert loop.time() - started < 10
    ledger.release.set()  # let the handler end, before the loop does
    async for attempt in eventually_async(5, every=0.05):
        with attempt:
            assert subscription.in_flight == 0
    async with await aio_pika.connect(amqp_url) as cleanup:  # the message went back: drop it
        _, declared = await open_channel(cleanup)
        for queue in declared.queues.values():
            await queue.purge()


async def test_a_consumer_stopped_while_its_connection_is_down_is_not_restored(
    amqp_url: str, broker_behind_a_hop: tuple[Hop, str]
) -> None:
    """A stop with the broker connection down cannot cancel the consumer (it went with the
    channel). If the connection comes back while the stop still waits for a delivery in
    flight, aio-pika must not restore that consumer: it would take a batch of messages and
    hold them, unhandled, until the channel closes."""
    hop, through_hop = broker_behind_a_hop
    direct = await aio_pika.connect(amqp_url)
    connection = await aio_pika.connect_robust(through_hop, reconnect_interval=0.2)
    try:
        channel, declared = await open_channel(connection, prefetch=10)
        for queue in declared.queues.values():
            await queue.purge()
        broker = Broker(channel, declared, Publisher.on(channel, declared))
        started, release = asyncio.Event(), asyncio.Event()

        async def in_flight(message: ReservationRequested) -> None:
            started.set()
            await release.wait()

        subscription = await broker.subscribe(
            topology.CREDIT_CHECK, ReservationRequested, in_flight
        )
        sending, sent_declared = await open_channel(direct)
        sender = Broker(sending, sent_declared, Publisher.on(sending, sent_declared))
        request = ReservationRequested(reservation_id=uuid.uuid4(), username="alice", item_id="b")
        await sender.publish(request, topology.RESERVATION_REQUESTS)
        await asyncio.wait_for(started.wait(), 10)
        await hop.down()
        async for attempt in eventually_async(10, every=0.05):
            with attempt:
                assert channel.is_closed, "the drop not seen yet"
        stopping = asyncio.ensure_future(subscription.stop(20))
        await asyncio.sleep(0.5)
        await hop.up()
        async for attempt in eventually_async(10, every=0.1):
            with attempt:
                assert not channel.is_closed, "not reconnected yet"
        await asyncio.sleep(1)  # a restored consumer would be back by now
        spec = topology.CREDIT_CHECK
        probe = await (await direct.channel()).declare_queue(spec.name, passive=True)
        assert probe.declaration_result.consumer_count == 0
        release.set()
        await asyncio.wait_for(stopping, 10)
    finally:
        await connection.close()
        await direct.close()


async def test_a_delivery_whose_channel_closes_under_its_handler_is_no_handler_failure(
    channel: AbstractChannel, amqp_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection dropped under a handler: its event finds the channel gone, and the
    delivery cannot be settled. The broker redelivers it; it is not retried as a handler
    failure (no back-off, no WARNING saying the handler failed), and the redelivery is
    handled."""
    capture = capture_logs_of(monkeypatch, delivery)
    declared = await topology.declare(channel)
    broker = Broker(channel, declared, Publisher.on(channel, declared))
    broker.publisher.hold = 0.2  # how long an event waits for its channel to come back
    request = ReservationRequested(reservation_id=uuid.uuid4(), username="alice", item_id="b")
    confirmed = ReservationConfirmed(
        reservation_id=request.reservation_id, username="alice", item_id="b", price=10
    )
    attempts: list[tuple[int, bool]] = []

    async def channel_closes_under_it(message: ReservationRequested) -> Handled:
        current = delivery.current_delivery()
        attempts.append((current.attempt, current.redelivered))
        if len(attempts) == 1:
            underlay = await channel.get_underlay_channel()
            with contextlib.suppress(aiormq.exceptions.ChannelClosed):  # how a close ends
                await underlay.close(ChannelReplaced(None, "test: closed under the handler"))
        return Handled(events=(Publication(confirmed, topology.RESERVATION_CONFIRMATIONS),))

    subscription = await broker.subscribe(
        topology.CREDIT_CHECK, ReservationRequested, channel_closes_under_it
    )
    await broker.publish(request, topology.RESERVATION_REQUESTS)
    async with channel_of_its_own(amqp_url) as reading:  # the test's channel closes meanwhile
        event = await get_within(await reading.get_queue(topology.FULFILMENT.name), 15)
        await event.ack()
    assert await subscription.stop(5)
    assert attempts == [(1, False), (1, True)]  # redelivered, not a retry copy
    assert [e["event"] for e in capture.entries] == [
        "channel lost before the message was settled; it will be redelivered"
    ]
    assert await declared.queues[topology.DEAD_LETTERS.name].get(fail=False) is None
