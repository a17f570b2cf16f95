"""Where the local broker and database listen by default, what counts as this machine, and
which ports are free or taken."""

import ipaddress
import socket

from messaging.settings import BrokerSettings

# The services' own default, so the dev tools never disagree with them.
DEFAULT_AMQP_URL = BrokerSettings.model_fields["amqp_url"].default.get_secret_value()
DEFAULT_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
LOCALHOST = "127.0.0.1"


def is_loopback(host: str | None) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def free_port(host: str = LOCALHOST) -> int:
    """A port nothing listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_free(host: str, port: int) -> bool:
    """True when nothing listens on ``host:port``: a bind with SO_REUSEADDR succeeds, as it will
    for the servers we start (uvicorn and gRPC set it too), so connections of a process that
    just stopped, left in TIME_WAIT, do not count. Without SO_REUSEPORT this also notices a
    gRPC server, which would otherwise silently share the port."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def connection_error(host: str, port: int, timeout: float = 1.0) -> OSError | None:
    """None when something accepts connections on ``host:port``, else the error."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as error:
        return error
