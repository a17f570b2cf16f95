"""A message the broker returns is matched to its own publish.

aiormq matches a returned (unroutable) message to the publish awaiting its confirm by the
message's id. A reservation's reply and event had one id, the reservation id, and go out
together: a returned event was reported confirmed, and its return given to the reply, which
was dropped with a warning; the event was lost, the reservation charged and never fulfilled
(a fault campaign, 1 in about 4,000 requests while an exchange was deleted again and again).
Concurrent POSTs with one ``Idempotency-Key`` publish the same request: with its queue gone,
38 of 100 were answered 202 for a request never queued. Each kind of message now has an id of
its own, and a publisher sends one message id at a time (``messaging/publisher.py``). In
vhosts of their own, with the queue deleted: every publish to it comes back.
"""

import asyncio
import uuid

from aio_pika.exceptions import PublishError

from domain.reservations import Outcome
from messaging import topology
from messaging.messages import CreditChecked, ReservationConfirmed, ReservationRequested
from messaging.publisher import ReplyAddress
from tests import infra
from tests.system import publishing_in_own_vhost


async def test_a_returned_event_fails_its_own_publish_not_the_reply(
    amqp_url: str, broker: infra.Broker
) -> None:
    async with publishing_in_own_vhost(amqp_url, broker, "return-matching") as (
        connection,
        publisher,
    ):
        operator = await connection.channel()
        await operator.queue_delete(topology.FULFILMENT.name)
        asker = await operator.declare_queue(exclusive=True)
        for _ in range(4):
            reservation_id = uuid.uuid4()
            event = ReservationConfirmed(
                reservation_id=reservation_id, username="alice", item_id="book-1", price=10
            )
            reply = CreditChecked(
                reservation_id=reservation_id, outcome=Outcome.CONFIRMED, credits_left=90
            )
            # The event's frames go out first, then the reply's, as Publisher.send does.
            publishing = asyncio.ensure_future(
                publisher.publish(event, topology.RESERVATION_CONFIRMATIONS)
            )
            await asyncio.sleep(0)
            replying = asyncio.ensure_future(
                publisher.reply(reply, ReplyAddress(asker.name, "correlation"))
            )
            published, replied = await asyncio.gather(publishing, replying, return_exceptions=True)
            assert isinstance(published, PublishError), published
            assert replied is None, replied


async def test_the_same_request_published_twice_at_once_is_returned_twice(
    amqp_url: str, broker: infra.Broker
) -> None:
    async with publishing_in_own_vhost(amqp_url, broker, "same-request") as (
        connection,
        publisher,
    ):
        await (await connection.channel()).queue_delete(topology.CREDIT_CHECK.name)
        request = ReservationRequested(
            reservation_id=uuid.uuid4(), username="alice", item_id="book-1"
        )
        results = await asyncio.gather(
            *(publisher.publish(request, topology.RESERVATION_REQUESTS) for _ in range(8)),
            return_exceptions=True,
        )
        assert all(isinstance(r, PublishError) for r in results), results
