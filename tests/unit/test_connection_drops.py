"""What a dropped broker connection logs (messaging/connection_drops.py), record by record, as
aiormq 7.2 and aio-pika 10.2 write them (their templates; the end-to-end behaviour is in
tests/reliability/test_connection_drops.py)."""

import logging

import pytest
from aiormq.exceptions import ConnectionClosed

from messaging.connection import quiet
from messaging.connection_drops import AIORMQ_LOGGER, _ConnectionDropLines

BROKER_CLOSED = (
    'Unexpected connection close from remote "%s", Connection.Close(reply_code=%r, reply_text=%r)'
)
READER_FAILED = "Cancelling cause reader exited abnormally"


def _record(
    msg: str, args: tuple[object, ...], level: int, exc: BaseException | None = None
) -> logging.LogRecord:
    exc_info = (type(exc), exc, None) if exc is not None else None
    return logging.LogRecord(AIORMQ_LOGGER, level, __file__, 1, msg, args, exc_info)


def test_a_forced_close_is_a_warning_and_its_traceback_goes() -> None:
    lines = _ConnectionDropLines()
    closed = _record(BROKER_CLOSED, ("amqp://x", 320, "CONNECTION_FORCED - restart"), 40)
    assert lines.filter(closed) and closed.levelname == "WARNING"
    reader = _record(READER_FAILED, (), 30, ConnectionClosed(320, "CONNECTION_FORCED"))
    assert not lines.filter(reader)


def test_any_other_close_stays_an_error() -> None:
    """530 (the vhost deleted), 541 (an internal error), 50x (a frame the broker could not
    read: a client's bug) are no restart: an operator must look. The reader's traceback of it
    tells nothing more: one line."""
    lines = _ConnectionDropLines()
    for code in (530, 541, 501, 505):
        closed = _record(BROKER_CLOSED, ("amqp://x", code, "NOT_ALLOWED"), 40)
        assert lines.filter(closed) and closed.levelname == "ERROR"
        reader = _record(READER_FAILED, (), 30, ConnectionClosed(code, "NOT_ALLOWED"))
        assert lines.filter(reader) and reader.exc_info is None
        assert reader.getMessage().startswith(
            f"broker connection lost: ConnectionClosed: [Errno {code}]"
        )


def test_a_network_error_is_one_line_without_a_traceback() -> None:
    reader = _record(READER_FAILED, (), 30, ConnectionResetError(104, "Connection reset"))
    assert _ConnectionDropLines().filter(reader)
    assert (
        reader.getMessage()
        == "broker connection lost: ConnectionResetError: [Errno 104] Connection reset"
    )
    assert reader.exc_info is None


def test_two_connects_at_once_leave_their_loggers_heard_after(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Start-up quiets aiormq's lines about each failed attempt. By the loggers' levels, two
    connects at once (an API and a worker in one test process) saved each other's CRITICAL
    as the level to restore, and the loggers stayed silent for good: a later test saw no
    WARNING of a dropped connection."""
    caplog.set_level(logging.INFO)
    logger = logging.getLogger(AIORMQ_LOGGER)
    first, second = quiet((AIORMQ_LOGGER,)), quiet((AIORMQ_LOGGER,))
    first.__enter__()
    second.__enter__()
    logger.warning("a failed attempt, quieted")
    first.__exit__(None, None, None)
    second.__exit__(None, None, None)
    logger.warning("heard again")
    assert [r.getMessage() for r in caplog.records if r.name == AIORMQ_LOGGER] == ["heard again"]
