"""Connecting to RabbitMQ at start-up, with a bounded wait and a clear error.

``connect_robust`` reconnects after the first connection succeeds, but the first attempt fails
straight away if the broker is not up yet (common when everything starts at once), so start-up
retries for ``AMQP_CONNECT_TIMEOUT`` seconds. The password never appears in what we log.
"""

import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import aio_pika
import structlog
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractRobustConnection
from aiormq.exceptions import (
    ChannelPreconditionFailed,
    InvalidFrameError,
    ProbableAuthenticationError,
)
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    retry_if_not_exception_type,
    stop_after_delay,
    wait_exponential,
)
from yarl import URL

from messaging import closing_channel, lenient_decoding, topology
from messaging.connection_drops import tell_drops
from messaging.settings import BrokerSettings

log = structlog.get_logger(__name__)


# The broker of `docker compose up -d rabbitmq`: its own user and vhost (rabbitmq/definitions.json).
COMPOSE_AMQP_URL = "amqp://reservations:reservations-local-only@127.0.0.1:5672/reservations"
# What to do about a broker nothing answers at, for the services and the CLI alike.
START_A_BROKER = (
    "Start it: `rabbitmq-server -detached` (Debian/Ubuntu: `apt-get install rabbitmq-server`), "
    f"or `docker compose up -d rabbitmq` and then `export AMQP_URL={COMPOSE_AMQP_URL}` (its own "
    "user and vhost); or point AMQP_URL at a running broker."
)
# They log every failed start-up attempt as an error; the outcome is one line of ours instead.
RETRY_LOGGERS = ("aiormq.connection", "aio_pika.robust_connection")
# Seconds between reconnection attempts once connected (aio-pika's default is 5).
RECONNECT_INTERVAL = 1
# Logs each failed reconnection attempt, with the error as its second argument.
RECONNECT_LOGGER = "aio_pika.robust_connection"


class BrokerUnreachable(ConnectionError):
    """The broker did not accept a connection within the start-up timeout, refused our
    credentials, or would not open the vhost."""


class TopologyConflict(RuntimeError):
    """RabbitMQ refused to declare the topology: something with that name exists already with
    other arguments (406 PRECONDITION_FAILED)."""


def redacted(url: str) -> str:
    """The URL without its password, safe for logs and error messages."""
    parsed = URL(url)
    return str(parsed.with_password("***")) if parsed.password else str(parsed)


def unreachable(url: str, reason: str) -> str:
    """The sentence for a broker nothing answers at (README, Troubleshooting), password left
    out: the services and the CLI say it alike."""
    return f"RabbitMQ is unreachable at {redacted(url)} ({reason})."


def vhost_of(url: str) -> str:
    """The vhost an AMQP URL names, as aiormq reads it: "/" when the path is empty."""
    return URL(url).path[1:] or "/"


def refused(url: str, exc: BaseException) -> str | None:
    """The sentence for a broker that answered but would not let us in (README,
    Troubleshooting), or None when ``exc`` is not such a refusal. Retrying cannot fix either."""
    user = URL(url).user
    if isinstance(exc, ProbableAuthenticationError):
        return (
            f"RabbitMQ at {redacted(url)} refused the credentials of user {user!r}: check the "
            "user and password in AMQP_URL."
        )
    if isinstance(exc, InvalidFrameError):
        # RabbitMQ answers Connection.Open with Connection.Close (530 NOT_ALLOWED) when the
        # vhost does not exist, the user has no permissions on it, or the vhost is down or at
        # its connection limit; aiormq reports that as an unexpected frame, without the text.
        vhost = vhost_of(url)
        return (
            f"RabbitMQ at {redacted(url)} would not open vhost {vhost!r} for user {user!r}: it "
            f"does not exist, or the user has no permissions on it (`rabbitmqctl list_vhosts`, "
            f"`rabbitmqctl list_permissions -p {vhost}`), or it is down or at its connection "
            "limit. Check the vhost in AMQP_URL."
        )
    return None


async def connect(settings: BrokerSettings) -> AbstractRobustConnection:
    url = settings.amqp_url.get_secret_value()
    lenient_decoding.install()  # one bad message property must not drop the connection
    closing_channel.install()  # nor a publish racing a channel's close
    try:
        with quiet(RETRY_LOGGERS):
            connection = await _connect_with_retries(url, settings.amqp_connect_timeout)
    except (ProbableAuthenticationError, InvalidFrameError) as exc:
        raise BrokerUnreachable(refused(url, exc)) from None
    except (ConnectionError, OSError) as exc:
        raise BrokerUnreachable(
            f"{unreachable(url, type(exc).__name__)} {START_A_BROKER}"
        ) from None
    _say_why_reconnects_are_refused()
    tell_drops(connection, redacted(url))
    log.info("connected to broker", url=redacted(url))
    return connection


def is_up(connection: AbstractRobustConnection) -> bool:
    """Connected now: not closed for good, and not between a drop and its reconnection."""
    return connection.connected.is_set() and not connection.is_closed


class _ReconnectRefusals(logging.Filter):
    """aio-pika's reconnect loop logs each failed attempt with the error as it stands: a
    broker that no longer lets us in (the user's password changed, its permissions on the
    vhost revoked, the vhost deleted) reads "unexpected frame" or the like, once a second,
    saying neither what refused nor what to check. The line says both instead (:func:`refused`,
    as at start-up); other failures pass unchanged."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            args = record.args if isinstance(record.args, tuple) else ()
            url = getattr(args[0], "url", None) if args else None  # the connection's
            errors = [arg for arg in args[1:] if isinstance(arg, BaseException)]
            sentence = refused(str(url), errors[0]) if isinstance(url, URL) and errors else None
            if sentence is not None:
                record.msg = "reconnecting: %s (%s)"
                record.args = (sentence, type(errors[0]).__name__)
        except Exception:  # noqa: BLE001 - it runs inside aio-pika's reconnect loop: never raise
            pass
        return True


_RECONNECT_REFUSALS = _ReconnectRefusals()


def _say_why_reconnects_are_refused() -> None:
    logging.getLogger(RECONNECT_LOGGER).addFilter(_RECONNECT_REFUSALS)  # once: a set


async def _connect_with_retries(url: str, within: float) -> AbstractRobustConnection:
    async for attempt in AsyncRetrying(
        stop=stop_after_delay(within),
        wait=wait_exponential(multiplier=0.2, max=2),
        retry=retry_if_exception_type((ConnectionError, OSError))
        & retry_if_not_exception_type(ProbableAuthenticationError),
        reraise=True,
    ):
        with attempt:
            return await aio_pika.connect_robust(
                url, timeout=5, reconnect_interval=RECONNECT_INTERVAL
            )
    raise AssertionError("unreachable: tenacity re-raises the last error")


@contextmanager
def quiet(names: tuple[str, ...]) -> Iterator[None]:
    """These loggers say nothing below CRITICAL meanwhile, unless ``LOG_LEVEL=DEBUG``. A filter
    of this call's own, not the loggers' levels: two connections opened at once (an API and a
    worker in one test process) saved each other's CRITICAL as the level to restore, and the
    loggers stayed silent for good."""
    if logging.getLogger().isEnabledFor(logging.DEBUG):
        yield
        return
    loggers = [logging.getLogger(name) for name in names]
    hush = _OnlyCritical()
    for logger in loggers:
        logger.addFilter(hush)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(hush)


class _OnlyCritical(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.CRITICAL


async def open_channel(
    connection: AbstractConnection,
    prefetch: int | None = None,
    queues: Sequence[topology.QueueSpec] = topology.QUEUES,
) -> tuple[AbstractChannel, topology.Declared]:
    """A channel with publisher confirms (a returned, unroutable message raises), with the
    topology declared on it (:func:`messaging.topology.declare`: all of it, or ``queues``)."""
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    if prefetch is not None:
        await channel.set_qos(prefetch_count=prefetch)
    try:
        return channel, await topology.declare(channel, queues)
    except ChannelPreconditionFailed as exc:
        raise TopologyConflict(
            _precondition_failed(str(exc.args[0] if exc.args else exc))
        ) from None


def _precondition_failed(reason: str) -> str:
    found = re.search(r"for queue '([^']+)' in vhost '([^']*)'", reason)
    fix = (
        f"delete it (`rabbitmqctl delete_queue -p {found[2]} {found[1]}`) and start again"
        if found
        else "delete it (rabbitmqctl, or the management UI) and start again"
    )
    return (
        f"RabbitMQ refused to declare the topology of messaging/topology.py: {reason}. A queue "
        f"declared earlier with other arguments is in the way: {fix}."
    )
