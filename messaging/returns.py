"""Messages the broker returns unroutable: matched to their own publish, and their route's
queues bound again.

A mandatory publish that no queue takes comes back (``basic.return``, ``NO_ROUTE``), and
aiormq fails the publish awaiting its confirm with :class:`PublishError`. Two things go wrong
around that, and :class:`Returns` handles both for a :class:`~messaging.publisher.Publisher`:

- **aiormq matches a return to its publish by message id.** Of two publishes of one id in
  flight on a channel, one can be told confirmed for the other's return. A reservation's reply
  and event, published together, had one id: a returned event was reported confirmed, and its
  return given to the reply (a fault campaign: the event lost, the reservation charged and
  never fulfilled). Each kind of message has an id of its own now
  (:class:`~messaging.messages.ReservationMessage`), and :meth:`Returns.alone` sends one id at a
  time: concurrent POSTs with one ``Idempotency-Key`` publish the same request, and 38 of 100
  were answered 202 for a request never queued.
- **Nothing bound a queue again while the services ran.** With a binding an operator deleted,
  the API answered 503 to every request, and a worker parked every confirmed reservation,
  charged, in the dead-letter queue, until a restart; and a channel that restores the topology
  after the exchange was deleted binds each queue a moment after the exchange is back.
  :meth:`Returns.bound_again` binds the route's queues again (never re-creates one: see
  :func:`messaging.topology.bind_route`) before the publish goes once more.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator

import structlog
from aio_pika.abc import AbstractChannel
from aio_pika.exceptions import PublishError

from messaging import topology
from messaging.topology import Route

log = structlog.get_logger(__name__)

# Seconds after a route's queues were bound again before a publish sent since, and returned
# all the same, binds them again: until then the route is unroutable after all.
BIND_AGAIN_AFTER = 1.0


class Returns:
    """The returns on one publishing channel: one publish per message id at a time, and one
    binding at a time per route."""

    def __init__(self, channel: AbstractChannel | None) -> None:
        self._channel = channel
        # Per message id, the publish of it in flight (see alone).
        self._in_flight: dict[str, asyncio.Future[None]] = {}
        # Per route, the last binding of its queues (it gives when it ended).
        self._binding: dict[Route, asyncio.Future[float]] = {}

    @contextlib.asynccontextmanager
    async def alone(self, message_id: str | None, deadline: float | None) -> AsyncIterator[None]:
        """No other publish of ``message_id`` in flight meanwhile: a second one waits for the
        first, until ``deadline`` (loop time; then TimeoutError)."""
        if message_id is None:  # aiormq gives the message a random one
            yield
            return
        loop = asyncio.get_running_loop()
        while (earlier := self._in_flight.get(message_id)) is not None:
            timeout = None if deadline is None else max(0.0, deadline - loop.time())
            await asyncio.wait((earlier,), timeout=timeout)
            if not earlier.done():
                raise TimeoutError(f"another publish of {message_id} is still in flight")
        done = self._in_flight[message_id] = loop.create_future()
        try:
            yield
        finally:
            del self._in_flight[message_id]
            done.set_result(None)

    async def bound_again(
        self, to: Route, returned: PublishError, sent_at: float, deadline: float | None
    ) -> bool:
        """After a return of a publish sent at ``sent_at``: True once ``to``'s queues are bound
        to it again, when the publish should go once more. One binding at a time per route,
        which the publishes returned meanwhile wait for (until ``deadline``: then False, and
        the return stands: nothing was queued). A publish sent before the last binding ended
        goes again; one sent after it and returned all the same finds the route unroutable
        (False), unless that binding is :data:`BIND_AGAIN_AFTER` old, when it binds again.
        False at once for a route the topology binds no queue by, or without a channel."""
        if self._channel is None or not topology.queues_of(to):
            return False
        loop = asyncio.get_running_loop()
        binding = self._binding.get(to)
        if binding is not None and binding.cancelled():
            binding = None
        if binding is not None and binding.done():
            ended_at = binding.result()
            if sent_at < ended_at:
                return True
            if loop.time() - ended_at < BIND_AGAIN_AFTER:
                return False
            binding = None
        if binding is None:
            log.warning(
                "a publish came back unroutable; binding its queues again",
                destination=_destination(to),
                error=str(returned),
            )
            binding = self._binding[to] = asyncio.ensure_future(_bind(self._channel, to))
        timeout = None if deadline is None else max(0.0, deadline - loop.time())
        await asyncio.wait((binding,), timeout=timeout)  # a waiter cancelled leaves it running
        return binding.done()


async def _bind(channel: AbstractChannel, to: Route) -> float:
    """Bind ``to``'s queues again, on the connection under ``channel``; never raises (the
    publish then meets the same return). Returns when it ended, in loop time."""
    try:
        async with asyncio.timeout(topology.DECLARE_WITHIN):
            underlay = await channel.get_underlay_channel()
            if missing := await topology.bind_route(underlay.connection, to):
                log.warning(
                    "not re-creating a queue that is gone: the worker consuming it does",
                    destination=_destination(to),
                    queues=list(missing),
                )
    except Exception as exc:  # noqa: BLE001 - the return stands; said here
        log.warning(
            "could not bind the route's queues again",
            destination=_destination(to),
            error=repr(exc),
        )
    return asyncio.get_running_loop().time()


def _destination(to: Route) -> str:
    return f"{to.exchange.name}/{to.routing_key}"
