"""The filter that says why a reconnect is refused: it rewrites a refusal, leaves anything
else as it is, and never raises (it runs inside aio-pika's reconnect loop)."""

import logging

import pytest
from aiormq.exceptions import InvalidFrameError, ProbableAuthenticationError
from yarl import URL

from messaging.connection import RECONNECT_LOGGER, _ReconnectRefusals

URL_ = URL("amqp://svc:s3cret@127.0.0.1:5672/shop")


class Connection:
    url = URL_


CONNECTION = Connection()


def _record(msg: str, args: object) -> logging.LogRecord:
    return logging.LogRecord(RECONNECT_LOGGER, logging.WARNING, __file__, 1, msg, args, None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("error", "says"),
    [
        (InvalidFrameError("Connection.Close"), "would not open vhost 'shop' for user 'svc'"),
        (ProbableAuthenticationError("ACCESS_REFUSED"), "refused the credentials of user 'svc'"),
    ],
)
def test_a_refusal_says_what_refused_and_what_to_check(error: Exception, says: str) -> None:
    record = _record(
        'Connection attempt to "%s" failed: %s. Reconnecting after %r seconds.',
        (CONNECTION, error, 1),
    )
    assert _ReconnectRefusals().filter(record)
    line = record.getMessage()
    assert line.startswith("reconnecting: RabbitMQ at ") and says in line, line
    assert type(error).__name__ in line and "s3cret" not in line


@pytest.mark.parametrize(
    "args",
    [
        (CONNECTION, ConnectionRefusedError("refused"), 1),  # not a refusal of ours
        (CONNECTION, "InvalidFrameError", InvalidFrameError("x"), 1),  # the other shape
        ({"a": 1},),  # a mapping
        (),
        (object(), InvalidFrameError("x"), 1),  # no url
        (type("Odd", (), {"url": object()})(), InvalidFrameError("x"), 1),  # a url not a URL
    ],
    ids=["other-error", "second-shape", "mapping", "no-args", "no-url", "odd-url"],
)
def test_only_a_refusal_is_rewritten_and_nothing_raises(args: object) -> None:
    record = _record("Reconnect attempt failed %s", args)
    before = (record.msg, record.args)
    assert _ReconnectRefusals().filter(record)
    rewritten = record.msg.startswith("reconnecting:")
    # aio-pika's other line ("Reconnect attempt failed %s due to %s: %s") carries the error
    # third: a refusal there is rewritten too; anything else is left as it was.
    assert rewritten == (
        isinstance(args, tuple)
        and args[:1] == (CONNECTION,)
        and any(isinstance(a, InvalidFrameError) for a in args)
    )
    if not rewritten:
        assert (record.msg, record.args) == before
