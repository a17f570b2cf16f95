"""Connecting to RabbitMQ at start-up, with a bounded wait and a clear error.

``connect_robust`` reconnects after the first connection succeeds, but the first attempt fails
straight away if the broker is not up yet (common when everything starts at once), so start-up
retries for ``AMQP_CONNECT_TIMEOUT`` seconds. The password never appears in what we log.
"""

import aio_pika
import structlog
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractRobustConnection
from aiormq.exceptions import ProbableAuthenticationError
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    retry_if_not_exception_type,
    stop_after_delay,
    wait_exponential,
)
from yarl import URL

from messaging import topology
from messaging.settings import BrokerSettings

log = structlog.get_logger(__name__)


# Seconds between reconnection attempts once connected (aio-pika's default is 5).
RECONNECT_INTERVAL = 1


class BrokerUnreachable(ConnectionError):
    """The broker did not accept a connection within the start-up timeout, or refused our
    credentials."""


def redacted(url: str) -> str:
    """The URL without its password, safe for logs and error messages."""
    parsed = URL(url)
    return str(parsed.with_password("***")) if parsed.password else str(parsed)


async def connect(settings: BrokerSettings) -> AbstractRobustConnection:
    url = settings.amqp_url.get_secret_value()
    try:
        async for attempt in AsyncRetrying(
            stop=stop_after_delay(settings.amqp_connect_timeout),
            wait=wait_exponential(multiplier=0.2, max=2),
            retry=retry_if_exception_type((ConnectionError, OSError))
            & retry_if_not_exception_type(ProbableAuthenticationError),
            reraise=True,
        ):
            with attempt:
                connection = await aio_pika.connect_robust(
                    url, timeout=5, reconnect_interval=RECONNECT_INTERVAL
                )
    except ProbableAuthenticationError:
        # Retrying cannot fix a wrong password: say so at once.
        raise BrokerUnreachable(
            f"RabbitMQ at {redacted(url)} refused the credentials of user "
            f"{URL(url).user!r}: check the user and password in AMQP_URL."
        ) from None
    except (ConnectionError, OSError) as exc:
        raise BrokerUnreachable(
            f"RabbitMQ is unreachable at {redacted(url)} ({type(exc).__name__}). "
            "Start it (e.g. `rabbitmq-server -detached`, or `docker compose up rabbitmq`) "
            "or point AMQP_URL at a running broker."
        ) from None
    log.info("connected to broker", url=redacted(url))
    return connection


async def open_channel(
    connection: AbstractConnection, prefetch: int | None = None
) -> tuple[AbstractChannel, topology.Declared]:
    """A channel with publisher confirms (a returned, unroutable message raises), with the
    topology declared on it."""
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    if prefetch is not None:
        await channel.set_qos(prefetch_count=prefetch)
    return channel, await topology.declare(channel)
