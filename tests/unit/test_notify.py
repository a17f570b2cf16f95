"""A worker tells its supervisor it is ready by systemd's notification protocol, to the socket
``NOTIFY_SOCKET`` names (a real Unix datagram socket here); without one it sends nothing, and a
socket it cannot reach never stops it."""

import socket
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from service.notify import NOTIFY_SOCKET, notify_ready


@pytest.fixture
def listening(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        sock.settimeout(2)
        yield sock, address


def test_ready_is_sent_to_the_socket_the_supervisor_named(
    listening: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, address = listening
    monkeypatch.setenv(NOTIFY_SOCKET, address)
    assert notify_ready() is True
    assert sock.recv(4096) == b"READY=1"


@pytest.mark.skipif(sys.platform != "linux", reason="the abstract namespace is Linux's")
def test_an_abstract_address_as_systemd_writes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"reservations-test-{uuid.uuid4()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        monkeypatch.setenv(NOTIFY_SOCKET, "@" + name)
        assert notify_ready() is True
        assert sock.recv(4096) == b"READY=1"


def test_nothing_is_sent_without_a_supervisor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(NOTIFY_SOCKET, raising=False)
    assert notify_ready() is False


@pytest.mark.parametrize("address", ["/nonexistent/notify.sock", "vsock:2:1234"])
def test_a_socket_it_cannot_use_is_a_warning_not_a_failure(
    address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(NOTIFY_SOCKET, address)
    with capture_logs() as logs:
        assert notify_ready() is False
    assert [entry["log_level"] for entry in logs] == ["warning"], logs
