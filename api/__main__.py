"""``python -m api``: serve the API with uvicorn (uvloop + httptools)."""

import asyncio
import errno
import logging
import os
import signal
import socket
import sys
from types import FrameType

import uvicorn
from uvicorn.config import STARTUP_FAILURE

from api.app import SERVICE_NAME, create_app
from api.http_protocol import bounded_head, quiet_shutdown_cuts
from api.settings import ApiSettings
from messaging.settings import BrokerSettings
from messaging.telemetry.logs import LogSettings, configure_logging
from messaging.telemetry.providers import refused_settings
from service.gc_tuning import tune_for_serving
from service.open_files import raise_open_files_limit
from service.settings_check import check, settings_checked
from service.startup import report_startup_failure
from store.engine import DatabaseUnreachable, SchemaNotReady, check_ready
from store.settings import StoreSettings


class PortTaken(OSError):
    """The API's address is held by another process."""


def require_free_port(host: str, port: int) -> None:
    """Bind and let go, as uvicorn is about to bind (``SO_REUSEADDR``, IPv6 for a host with a
    colon): PortTaken if it cannot."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        socket.create_server((host, port), family=family).close()
    except OSError as exc:
        raise _port_taken(host, port, exc) from exc


def _port_taken(host: str, port: int, exc: OSError) -> PortTaken:
    held = exc.errno == errno.EADDRINUSE
    said = os.strerror(exc.errno) if exc.errno else str(exc)  # not uvicorn's own wording
    return PortTaken(
        f"the API cannot listen on {host}:{port} ({said})"
        + (
            ": another API, `reservations run` or compose's api holds it; stop it, or set API_PORT"
            if held
            else ": check API_HOST and API_PORT"
        )
    )


class _PortTakenMeanwhile(logging.Filter):
    """uvicorn's error as it cannot bind (another API took the port between the check above
    and the bind: two started at once): kept for the one line :func:`main` reports instead."""

    def __init__(self) -> None:
        super().__init__()
        self.error: OSError | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, OSError) and record.msg.errno == errno.EADDRINUSE:
            self.error = record.msg
            return False
        return True


class _Server(uvicorn.Server):
    """uvicorn's server, which remembers the signals it was sent."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.signals: list[int] = []

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.signals.append(sig)
        super().handle_exit(sig, frame)


def main() -> None:
    with settings_checked():
        # All of them, read again by the lifespan: a bad value fails now, in one line, not as
        # uvicorn's traceback of a failed start-up.
        check(LogSettings, ApiSettings, BrokerSettings, StoreSettings, also=refused_settings)
    settings = ApiSettings()
    # A database that is down or not migrated, or the port taken: one line and exit 1, as the
    # workers do, instead of the lines and tracebacks uvicorn prints for a failed lifespan
    # (which checks the database again) or bind.
    configure_logging(SERVICE_NAME)
    try:
        require_free_port(settings.api_host, settings.api_port)
        asyncio.run(check_ready(StoreSettings()))
    except (PortTaken, DatabaseUnreachable, SchemaNotReady) as exc:
        report_startup_failure(exc)
        sys.exit(1)
    tune_for_serving()
    raise_open_files_limit()
    quiet_shutdown_cuts()
    server: _Server | None = None

    def stop_serving() -> None:  # the broker channel is lost for good: see api.app
        if server is not None:
            server.should_exit = True

    def stopping() -> bool:  # sent SIGTERM or SIGINT: see api.app
        return server is not None and server.should_exit

    app = create_app(settings, on_broker_lost=stop_serving, stopping=stopping)
    server = _Server(
        uvicorn.Config(
            app,
            host=settings.api_host,
            port=settings.api_port,
            # Logging is configured in the lifespan (structured, with trace ids), not by uvicorn.
            log_config=None,
            loop="auto",
            # httptools, with bounds on a request's head and on its time to arrive, which
            # httptools and uvicorn do not set.
            http=bounded_head(settings.max_head_bytes, settings.request_read_timeout),
            # No WebSocket endpoint: every Upgrade is served as HTTP/1.1 (api/http_protocol.py),
            # whatever WebSocket library a later dependency brings in.
            ws="none",
            # Let in-flight requests finish on SIGTERM, within a bound.
            timeout_graceful_shutdown=settings.api_shutdown_timeout,
            timeout_keep_alive=settings.keep_alive_timeout,
        )
    )
    taken = _PortTakenMeanwhile()
    logging.getLogger("uvicorn.error").addFilter(taken)
    try:
        server.run()
    except SystemExit as exc:  # uvicorn exits 3 when the app could not start: 1, as a worker
        if taken.error is not None:
            report_startup_failure(_port_taken(settings.api_host, settings.api_port, taken.error))
        if not app.state.stopped_starting:
            sys.exit(1 if exc.code == STARTUP_FAILURE else exc.code)
    except KeyboardInterrupt:  # Ctrl-C after the graceful stop: a clean exit, as uvicorn.run's
        pass
    if app.state.stopped_starting:
        # Stopped as asked, not failed: end as a stop after serving does (uvicorn raises a
        # SIGTERM again once it has shut down; Ctrl-C is a clean exit).
        if signal.SIGTERM in server.signals:
            signal.raise_signal(signal.SIGTERM)
        return
    # Lost: the broker channel stayed closed, logged by the lifespan, which stopped serving.
    if app.state.lost is not None:
        sys.exit(1)


if __name__ == "__main__":
    main()
