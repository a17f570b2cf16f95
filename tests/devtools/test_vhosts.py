"""A private vhost on the real broker: usable while it exists, gone afterwards."""

import asyncio

import aio_pika
import pytest

from devtools.vhosts import private_vhost
from messaging.connection import vhost_of
from tests.infra import Broker

pytestmark = pytest.mark.integration


def test_a_private_vhost_is_made_and_removed(broker: Broker) -> None:
    if broker.ctl is None:
        pytest.skip("rabbitmqctl cannot reach this broker")
    with private_vhost(broker.url, broker.ctl, "devtools") as url:
        name = vhost_of(url)
        assert name.startswith("devtools-")
        asyncio.run(_connect(url))
        assert name in broker.rabbitmqctl("list_vhosts", "--quiet").split()
    assert name not in broker.rabbitmqctl("list_vhosts", "--quiet").split()


async def _connect(url: str) -> None:
    connection = await aio_pika.connect(url)
    await connection.close()
