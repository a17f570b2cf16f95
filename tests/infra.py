"""Finding the real broker and database for the tests.

``AMQP_URL`` (default ``amqp://guest:guest@127.0.0.1:5672/``) and ``TEST_POSTGRES_URL`` (default
``postgresql+asyncpg://postgres@127.0.0.1:5432/test``). When one is unreachable and Docker is
available (a laptop), testcontainers starts it. Otherwise the tests FAIL with a message saying
how to start it: a missing broker is never a silent skip.

Each test session gets its own RabbitMQ virtual host when ``rabbitmqctl`` can reach the broker
(local install or container), so a developer's running worker never steals test messages.
"""

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import pytest
from yarl import URL

from devtools.addresses import (
    DEFAULT_AMQP_URL,
    DEFAULT_POSTGRES_URL,
    connection_error,
    free_port,
)
from devtools.vhosts import local_rabbitmqctl, private_vhost
from messaging.connection import vhost_of

__all__ = ["Broker", "free_port", "postgres", "rabbitmq"]

RABBITMQ_IMAGE = "rabbitmq:3.13.7-management"
POSTGRES_IMAGE = "postgres:16.6"


def docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0


@dataclass
class Broker:
    url: str  # with this session's vhost
    ctl: list[str] | None  # how to run rabbitmqctl against it, if we can

    def rabbitmqctl(self, *args: str) -> str:
        if self.ctl is None:
            pytest.skip("rabbitmqctl cannot reach this broker")
        done = subprocess.run([*self.ctl, *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    @property
    def vhost(self) -> str:
        return vhost_of(self.url)


@contextmanager
def rabbitmq() -> Iterator[Broker]:
    url = URL(os.environ.get("AMQP_URL", DEFAULT_AMQP_URL))
    with ExitStack() as stack:
        ctl: list[str] | None = None
        if connection_error(url.host or "127.0.0.1", url.port or 5672) is None:
            ctl = local_rabbitmqctl(str(url))
        elif docker_available():
            from testcontainers.rabbitmq import RabbitMqContainer

            container = stack.enter_context(RabbitMqContainer(RABBITMQ_IMAGE))
            url = URL.build(
                scheme="amqp",
                user="guest",
                password="guest",
                host=container.get_container_host_ip(),
                port=int(container.get_exposed_port(5672)),
                path="/",
            )
            ctl = ["docker", "exec", container.get_wrapped_container().id, "rabbitmqctl"]
        else:
            pytest.fail(
                f"RabbitMQ is not reachable at {url.with_password(None)} and Docker is not "
                "available. Start it (`rabbitmq-server -detached`, or `docker compose up "
                "rabbitmq`) or set AMQP_URL.",
                pytrace=False,
            )
        session_url = str(url)
        if ctl is not None:
            session_url = stack.enter_context(private_vhost(session_url, ctl, "test"))
        yield Broker(session_url, ctl)


@contextmanager
def postgres() -> Iterator[str]:
    url = URL(os.environ.get("TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL))
    if connection_error(url.host or "127.0.0.1", url.port or 5432) is None:
        yield str(url)
        return
    if not docker_available():
        pytest.fail(
            f"PostgreSQL is not reachable at {url.with_password(None)} and Docker is not "
            "available. Start it (`pg_ctlcluster <version> main start`) or set "
            "TEST_POSTGRES_URL.",
            pytrace=False,
        )
    from testcontainers.postgres import PostgresContainer

    with PostgresContainer(POSTGRES_IMAGE, driver="asyncpg") as container:
        yield container.get_connection_url()
