"""Whether a port is free, as the servers we start would find it."""

import socket

import pytest

from devtools.addresses import LOCALHOST, port_is_free


def _listener(reuse_port: bool = False) -> socket.socket:
    """A server socket as uvicorn and gRPC make theirs (SO_REUSEADDR; Linux lets a new bind
    reuse a port held by TIME_WAIT connections only when both sockets set it)."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:  # as gRPC servers do: a second one could share the port unnoticed
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    server.bind((LOCALHOST, 0))
    server.listen()
    return server


@pytest.mark.parametrize("reuse_port", [False, True])
def test_a_listening_port_is_taken_and_a_closed_one_free(reuse_port: bool) -> None:
    server = _listener(reuse_port)
    port = server.getsockname()[1]
    try:
        assert not port_is_free(LOCALHOST, port)
    finally:
        server.close()
    assert port_is_free(LOCALHOST, port)


def test_connections_left_in_time_wait_do_not_take_the_port() -> None:
    server = _listener()
    port = server.getsockname()[1]
    client = socket.create_connection((LOCALHOST, port))
    accepted, _ = server.accept()
    accepted.close()  # the server side closes first: its end waits in TIME_WAIT on ``port``
    client.recv(1)  # the FIN has arrived
    client.close()
    server.close()
    with socket.socket() as plain:  # what the check did before: refused while TIME_WAIT lasts
        try:
            plain.bind((LOCALHOST, port))
            time_wait = False
        except OSError:
            time_wait = True
    assert time_wait, "the setup left no TIME_WAIT connection on the port"
    assert port_is_free(LOCALHOST, port)
