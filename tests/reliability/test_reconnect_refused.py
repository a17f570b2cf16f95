"""A broker that stops letting a running service in: its reconnect loop says why.

aio-pika logs each failed reconnection attempt with the error as it stands, which for a
refusal reads like a protocol fault ("unexpected frame"). A fault campaign revoked a user's
permissions under a running system: the services logged that once a second, and nothing
named the vhost, the user or what to check. They now say it as a start-up would.
"""

import logging
import secrets
import uuid
from collections.abc import Iterator

import pytest
from pydantic import SecretStr
from yarl import URL

from messaging.connection import RECONNECT_LOGGER, connect
from messaging.settings import BrokerSettings
from tests import infra
from tests.waiting import eventually_async


@pytest.fixture
def account(broker: infra.Broker) -> Iterator[tuple[str, str]]:
    """A RabbitMQ user of its own (so that only its connections are dropped) and its URL."""
    user = f"refused-{uuid.uuid4().hex[:8]}"
    password = secrets.token_hex(16)
    broker.rabbitmqctl("add_user", user, password)
    try:
        broker.rabbitmqctl("set_permissions", "-p", broker.vhost, user, ".*", ".*", ".*")
        yield user, str(URL(broker.url).with_user(user).with_password(password))
    finally:
        broker.rabbitmqctl("delete_user", user)


def _drop_connections(broker: infra.Broker, user: str) -> None:
    listing = broker.rabbitmqctl("list_connections", "pid", "user", "--no-table-headers", "-q")
    pids = [line.split("\t")[0] for line in listing.splitlines() if line.endswith(f"\t{user}")]
    assert pids, listing
    for pid in pids:
        broker.rabbitmqctl("close_connection", pid, "test: permissions revoked")


async def test_a_reconnect_refused_for_want_of_permissions_says_so(
    broker: infra.Broker, account: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    user, url = account
    caplog.set_level(logging.WARNING, logger=RECONNECT_LOGGER)
    connection = await connect(BrokerSettings(amqp_url=SecretStr(url)))
    try:
        broker.rabbitmqctl("clear_permissions", "-p", broker.vhost, user)
        _drop_connections(broker, user)
        async for attempt in eventually_async(15, every=0.2):
            with attempt:
                said = [r.getMessage() for r in caplog.records if r.name == RECONNECT_LOGGER]
                assert any("would not open vhost" in line for line in said), said
        line = next(line for line in said if "would not open vhost" in line)
        assert f"for user {user!r}" in line and "list_permissions" in line
        assert url.split("@")[0].split(":")[-1] not in line  # never the password

        # Permissions back: the same connection comes back by itself.
        broker.rabbitmqctl("set_permissions", "-p", broker.vhost, user, ".*", ".*", ".*")
        async for attempt in eventually_async(15, every=0.2):
            with attempt:
                assert not connection.is_closed and connection.connected.is_set()
        channel = await connection.channel()
        await channel.close()
    finally:
        await connection.close()
