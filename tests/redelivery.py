"""Sending the same reservation request more than once, as a redelivery would, through the
typed request/reply client: the tests of idempotency by reservation id use it."""

import aio_pika

from messaging import topology
from messaging.broker import Broker
from messaging.messages import CreditChecked, ReservationRequested


async def ask_repeatedly(
    amqp_url: str, request: ReservationRequested, times: int = 2
) -> list[CreditChecked]:
    """The replies to ``request`` sent ``times`` times, one after the other."""
    connection = await aio_pika.connect(amqp_url)
    try:
        rpc = await (await Broker.open(connection)).rpc(reply_timeout=10)
        replies = [
            await rpc.call(request, CreditChecked, to=topology.RESERVATION_REQUESTS)
            for _ in range(times)
        ]
        await rpc.close()
    finally:
        await connection.close()
    return replies
