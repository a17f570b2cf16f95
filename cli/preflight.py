"""Checks before anything starts, so a missing broker or a busy port is one clear sentence
instead of three crashing children."""

import httpx

from cli.errors import CliError
from devtools.addresses import connection_error, port_is_free
from messaging.connection import COMPOSE_AMQP_URL, unreachable


def require_broker(amqp_url: str) -> None:
    """Fail clearly when nothing listens where ``AMQP_URL`` points, in the words a service
    uses when it cannot connect (README, Troubleshooting), the password left out."""
    url = httpx.URL(amqp_url.replace("amqp://", "http://", 1).replace("amqps://", "https://", 1))
    host = url.host or "127.0.0.1"
    port = url.port or (5671 if amqp_url.startswith("amqps") else 5672)
    error = connection_error(host, port, timeout=2)
    if error is not None:
        raise CliError(
            unreachable(amqp_url, str(error.strerror or error)),
            hint="start it: `rabbitmq-server -detached` (Debian/Ubuntu: `apt-get install "
            "rabbitmq-server`), or `docker compose up -d rabbitmq` and then "
            f"`export AMQP_URL={COMPOSE_AMQP_URL}` (its own user and vhost); or point AMQP_URL "
            "at a running broker.",
        )


def require_free_port(host: str, port: int, what: str, hint: str) -> None:
    """Fail clearly when ``port`` is taken (see :func:`devtools.addresses.port_is_free`)."""
    if not port_is_free(host, port):
        raise CliError(f"{what}: port {host}:{port} is already in use.", hint=hint)
