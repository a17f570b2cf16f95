"""Checks before anything starts, so a missing broker or a busy port is one clear sentence
instead of three crashing children."""

import socket

import httpx

from cli.errors import CliError


def require_broker(amqp_url: str) -> None:
    """Fail clearly when nothing listens where ``AMQP_URL`` points."""
    url = httpx.URL(amqp_url.replace("amqp://", "http://", 1).replace("amqps://", "https://", 1))
    host = url.host or "127.0.0.1"
    port = url.port or (5671 if amqp_url.startswith("amqps") else 5672)
    try:
        with socket.create_connection((host, port), timeout=2):
            return
    except OSError as error:
        raise CliError(
            f"RabbitMQ is not reachable at {host}:{port} ({error.strerror or error}).",
            hint="start it: `rabbitmq-server -detached` (Debian/Ubuntu: `apt-get install "
            "rabbitmq-server`), or `docker compose up -d rabbitmq`; or point AMQP_URL at one.",
        ) from None


def require_free_port(host: str, port: int, what: str, hint: str) -> None:
    """Fail clearly when ``port`` is taken. A plain bind (no SO_REUSEPORT) also notices a gRPC
    server that would otherwise silently share the port with ours."""
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            raise CliError(f"{what}: port {host}:{port} is already in use.", hint=hint) from None
