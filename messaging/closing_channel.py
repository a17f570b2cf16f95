"""A publish on a channel the broker is closing: refused here, as aiormq refuses an ack.

When the broker closes a channel (a publish to an exchange someone deleted: a 404), aiormq
queues ``Channel.CloseOk`` at once but marks the channel closed only a few loop turns later.
Its channel lock checks that mark alone, so a publish waiting for the lock (any concurrent
publish under load) takes it in between and queues its frames after the ``CloseOk``. The
broker, which has freed the channel number by then, closes the whole connection: ``504
CHANNEL_ERROR - expected 'channel.open'``. Every delivery the connection held goes back to its
queue, and before RabbitMQ 4.3 each such return counts toward the queue's delivery limit: a
fault campaign's exchange, deleted under load, dead-lettered requests already charged.

aiormq's ``basic_ack`` and ``rpc`` also check the close that has arrived (the channel's
private close event); :func:`install` makes its lock check it too, once taken. The publish is
refused with :class:`~aiormq.exceptions.ChannelInvalidStateError`, as on a closed channel,
which :class:`messaging.publisher.Publisher` holds until the channel is back. Written against
aiormq 7.2 (``tests/reliability/test_closing_channel.py`` checks the private name it reads).
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiormq.channel import Channel
from aiormq.exceptions import ChannelInvalidStateError

# aiormq's own lock, wrapped once (install() is safe to call more than once).
_AIORMQ_LOCK = Channel.lock
# The private asyncio.Event aiormq sets as the broker's Channel.Close arrives.
CLOSE_EVENT = "_Channel__close_event"


@asynccontextmanager
async def _lock_unless_closing(channel: Channel) -> AsyncIterator[None]:
    async with _AIORMQ_LOCK.fget(channel):  # type: ignore[attr-defined]
        closing = getattr(channel, CLOSE_EVENT, None)
        if closing is not None and closing.is_set():
            raise ChannelInvalidStateError(f"{channel!r} is closing")
        yield


def install() -> None:
    """Every aiormq channel in this process refuses to send once the broker's close arrived;
    :func:`messaging.connection.connect` calls it."""
    Channel.lock = property(_lock_unless_closing)  # type: ignore[assignment,method-assign]
