"""Checks before anything starts, so a missing broker, a busy port or a system already running
is one clear sentence instead of three crashing children."""

import asyncio

import aio_pika
import httpx
from aio_pika.abc import AbstractConnection
from aiormq.exceptions import AMQPError, ChannelNotFoundEntity
from yarl import URL

from cli.errors import CliError
from devtools.addresses import connection_error, port_is_free
from devtools.waiting import poll_async
from messaging.connection import (
    RETRY_LOGGERS,
    START_A_BROKER,
    quiet,
    redacted,
    refused,
    unreachable,
    vhost_of,
)
from messaging.topology import CREDIT_CHECK, FULFILMENT

# Seconds the consumers of a system that is stopping get to leave before this run refuses.
GONE_WITHIN = 5.0


def require_broker(amqp_url: str) -> None:
    """Fail clearly when nothing listens where ``AMQP_URL`` points, or the broker will not let
    us in, in the words a service uses (README, Troubleshooting), the password left out; and
    when something already consumes the work queues there (:func:`require_idle_work_queues`)."""
    url = httpx.URL(amqp_url.replace("amqp://", "http://", 1).replace("amqps://", "https://", 1))
    host = url.host or "127.0.0.1"
    port = url.port or (5671 if amqp_url.startswith("amqps") else 5672)
    error = connection_error(host, port, timeout=2)
    if error is not None:
        raise CliError(unreachable(amqp_url, str(error.strerror or error)), hint=START_A_BROKER)
    require_idle_work_queues(amqp_url)


def require_idle_work_queues(amqp_url: str) -> None:
    """Fail when a worker already consumes ``credit-check`` or ``fulfilment`` in this vhost: a
    second system there (another ``reservations run``, a worker started by hand, compose's
    workers) would take this one's messages, and its spans would go elsewhere."""
    consumers = asyncio.run(_consumers(amqp_url))
    busy = {queue: count for queue, count in consumers.items() if count}
    if busy:
        user = URL(amqp_url).user or "guest"
        taken = ", ".join(f"{queue} ({count})" for queue, count in busy.items())
        raise CliError(
            f"workers already consume this broker's work queues, so this run's messages would "
            f"go to them: {taken} consumer(s) in vhost {vhost_of(amqp_url)!r} at "
            f"{redacted(amqp_url)}.",
            hint="stop the system that is running (Ctrl-C where `reservations run` or `make "
            "demo` runs; `docker compose stop credit-check-worker fulfilment-worker`; workers "
            "started by hand), or give this one a vhost of its own: `rabbitmqctl add_vhost "
            f"mine && rabbitmqctl set_permissions -p mine {user} '.*' '.*' '.*'`, then "
            f"AMQP_URL={redacted(str(URL(amqp_url).with_path('/mine')))} (with the password).",
        )


async def open_connection(amqp_url: str, hint: str = START_A_BROKER) -> AbstractConnection:
    """A plain connection for a command's own use; a broker that is not there or will not let
    us in is a :class:`CliError` in the services' words (``hint`` for the first case)."""
    try:
        with quiet(RETRY_LOGGERS):  # aiormq logs each failed attempt; ours is the one line
            return await aio_pika.connect(amqp_url, timeout=5)
    except (AMQPError, ConnectionError, OSError) as exc:
        reason = refused(amqp_url, exc)
        if reason is not None:
            raise CliError(reason, hint="README.md, Troubleshooting") from None
        raise CliError(unreachable(amqp_url, type(exc).__name__), hint=hint) from None


async def _consumers(amqp_url: str) -> dict[str, int]:
    """Consumers per work queue (a queue not declared yet has none), once they are gone or
    after :data:`GONE_WITHIN` seconds: a system stopped a moment ago may still be leaving."""
    async with await open_connection(amqp_url) as connection:

        async def count() -> dict[str, int]:
            found: dict[str, int] = {}
            for spec in (CREDIT_CHECK, FULFILMENT):
                channel = await connection.channel()  # a failed passive declare closes it
                try:
                    queue = await channel.declare_queue(spec.name, passive=True)
                except ChannelNotFoundEntity:
                    continue
                found[spec.name] = queue.declaration_result.consumer_count or 0
                await channel.close()
            return found

        return await poll_async(count, lambda found: not any(found.values()), GONE_WITHIN, 0.5)


def require_free_port(host: str, port: int, what: str, hint: str) -> None:
    """Fail clearly when ``port`` is taken (see :func:`devtools.addresses.port_is_free`)."""
    if not port_is_free(host, port):
        raise CliError(f"{what}: port {host}:{port} is already in use.", hint=hint)
