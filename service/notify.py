"""Telling a supervisor that a service is ready: systemd's notification protocol (sd_notify(3)).

A supervisor that wants to know sets ``NOTIFY_SOCKET`` to the address of a Unix datagram
socket it reads; the service sends ``READY=1`` there once it serves. systemd does so for a
unit with ``Type=notify``, and ``reservations run`` for its workers (:mod:`cli.supervisor`),
so that readiness never depends on a log line that ``LOG_LEVEL`` may hide. Without the
variable nothing is sent.
"""

import os
import socket

import structlog

log = structlog.get_logger(__name__)

NOTIFY_SOCKET = "NOTIFY_SOCKET"
READY = b"READY=1"


def notify_ready() -> bool:
    """Send ``READY=1`` to ``NOTIFY_SOCKET``; True if sent. A socket that cannot be reached is
    a warning, never a failure: the service serves either way."""
    address = os.environ.get(NOTIFY_SOCKET, "")
    if not address:
        return False
    if address.startswith("@"):  # Linux's abstract namespace, as systemd writes it
        address = "\0" + address[1:]
    elif not address.startswith("/"):  # vsock: and others: not what a local supervisor sets
        log.warning("NOTIFY_SOCKET is not a Unix socket path: readiness not sent", address=address)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.settimeout(1.0)  # a supervisor that stopped reading must not hold the start
            sock.sendto(READY, address)
    except OSError as exc:
        log.warning("could not tell the supervisor this service is ready", error=str(exc))
        return False
    return True
