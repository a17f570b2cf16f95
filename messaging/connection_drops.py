"""What a dropped broker connection logs: one WARNING with the reason, then, once aio-pika has
reconnected and restored the channels, one INFO line of ours.

Left alone, aiormq and aio-pika tell a drop they recover from three times over, as ERRORs and
a traceback (six lines per process, more with each channel): the broker's close at ERROR, the
same close again with its traceback ("Cancelling cause reader exited abnormally"), and, per
channel, the failed attempt to reopen it before the connection is back ("Callback
<RobustChannel._on_close> error: ChannelInvalidStateError", or "RuntimeError: <Connection …>
closed"), which the reconnection then does.
An operator alerting on ERROR lines would be paged for every broker restart. Here:

- the broker's close (its reply code and text) stays, at WARNING when it is CONNECTION_FORCED
  (320: a restart, ``rabbitmqctl close_connection``), as an ERROR otherwise;
- the reader's traceback of a forced close goes; that of any other close, or of a network
  error (a reset, an end of file), becomes one WARNING line, ``broker connection lost:
  <error>``; any other error (a malformed frame) keeps its traceback, as aiormq means it to;
- a channel's reopen attempt refused for want of a connection is DEBUG;
- while the broker is away, each reconnection attempt is one WARNING (aio-pika's ``Connection
  attempt … failed: <error>. Reconnecting after 1 seconds.``), not that and aiormq's ERROR
  ``error when creating transport`` with the same error;
- ``reconnected to broker`` (INFO) once the connection and its channels are back.

A reconnection that keeps failing is still logged by aio-pika once a second (and read by
:mod:`messaging.connection`'s refusal filter), and ``/readyz`` says so.
"""

import logging
from functools import partial

import structlog
from aio_pika.abc import AbstractRobustConnection
from aiormq.exceptions import AMQPConnectionError, ConnectionClosed

from messaging.telemetry.logs import demoted_to_debug

log = structlog.get_logger(__name__)

AIORMQ_LOGGER = "aiormq.connection"
CALLBACK_LOGGER = "aio_pika.tools"  # logs a callback that raised, robust channels' among them

_BROKER_CLOSED = 'Unexpected connection close from remote "%s", '
_READER_FAILED = "Cancelling cause reader exited abnormally"
_CONNECT_FAILED = "error when creating transport: %r"
_CALLBACK_FAILED = "Callback %r error: %s: %s"
# The reply code of a close the broker was made to send (a restart, an operator's
# `rabbitmqctl close_connection`): any other (530 vhost gone, 541 internal error, 50x a frame
# it could not read) stays an ERROR, and its reader's traceback one WARNING line.
CONNECTION_FORCED = 320


class _ConnectionDropLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            return self._rewrite(record)
        except Exception:  # noqa: BLE001 - it runs inside aiormq's reader: never raise
            return True

    @staticmethod
    def _rewrite(record: logging.LogRecord) -> bool:
        message = str(record.msg)
        if record.name == AIORMQ_LOGGER and message.startswith(_BROKER_CLOSED):
            if isinstance(record.args, tuple) and record.args[1:2] == (CONNECTION_FORCED,):
                record.levelno, record.levelname = logging.WARNING, "WARNING"
        elif record.name == AIORMQ_LOGGER and message == _READER_FAILED and record.exc_info:
            error = record.exc_info[1]
            if isinstance(error, ConnectionClosed) and error.args[:1] == (CONNECTION_FORCED,):
                return False  # the broker's close, logged just before with its reason
            if isinstance(error, (OSError, AMQPConnectionError)):
                record.msg = "broker connection lost: %s: %s"
                record.args = (type(error).__name__, error)
                record.exc_info, record.exc_text = None, None
        elif record.name == AIORMQ_LOGGER and message == _CONNECT_FAILED:
            return demoted_to_debug(record)  # aio-pika's WARNING for the attempt says the same
        elif record.name == CALLBACK_LOGGER and message == _CALLBACK_FAILED:
            callback, error_type, reason = record.args if isinstance(record.args, tuple) else ()
            if _reopening(callback) and _no_transport(error_type, reason):
                return demoted_to_debug(record)
        return True


def _reopening(callback: object) -> bool:
    """A robust channel's reopen, in the one-shot callback aio-pika wraps it in (whose repr
    fails once it has run)."""
    inner = getattr(callback, "callback", callback)
    return getattr(inner, "__qualname__", "") == "RobustChannel._on_close"


def _no_transport(error_type: object, error: object) -> bool:
    """A channel's reopen refused because its connection is down: aiormq's "No active
    transport in channel", or "<Connection …> closed" from the connection itself."""
    return error_type == "ChannelInvalidStateError" or (
        error_type == "RuntimeError" and str(error).endswith(" closed")
    )


_DROP_LINES = _ConnectionDropLines()


def tell_drops(connection: AbstractRobustConnection, shown_url: str) -> None:
    """Install the filters (once per process: ``addFilter`` skips one already there) and the
    connection's ``reconnected to broker`` line, naming ``shown_url`` (without its password)."""
    for name in (AIORMQ_LOGGER, CALLBACK_LOGGER):
        logging.getLogger(name).addFilter(_DROP_LINES)
    connection.reconnect_callbacks.add(partial(_reconnected, shown_url))


def _reconnected(shown_url: str, _: AbstractRobustConnection) -> None:
    log.info("reconnected to broker", url=shown_url)
