"""The embedded OTLP/gRPC collector as ``reservations run`` and ``reservations collector`` start
it: on loopback, its traces kept in ``<data dir>/traces.jsonl`` and their log lines in
``<data dir>/logs.jsonl``, with a mark saying it records now (see
:func:`cli.trace_files.running_collector`)."""

import fcntl
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

from rich.console import Console

from cli.collector import OtlpReceiver, SpanStore
from cli.errors import CliError
from cli.invocation import command
from cli.log_store import LogStore, compact_logs_file
from cli.preflight import require_free_port
from cli.settings import COLLECTOR_HOST, DEFAULT_OTLP_PORT, CliSettings
from cli.trace_files import (
    LOCK_FILE,
    TRACES_FILE,
    compact_traces_file,
    mark_collector_started,
    mark_collector_stopped,
    running_collector,
)


@contextmanager
def embedded_collector(settings: CliSettings) -> Iterator[OtlpReceiver]:
    port = settings.collector_port
    if port:
        require_free_port(
            COLLECTOR_HOST,
            port,
            "the embedded trace collector",
            "another `reservations run` or `reservations collector` may be running, or Tempo "
            "(docker compose): choose another `--collector-port`, or have `reservations run` "
            f"export there with `--otlp-endpoint http://localhost:{port}`.",
        )
    with _the_only_collector_of(settings.data_dir):
        compact_traces_file(settings.data_dir, settings.collector_max_traces)
        compact_logs_file(settings.data_dir, settings.collector_max_traces)
        store = SpanStore(settings.collector_max_traces, store_dir=settings.data_dir)
        logs = LogStore(settings.collector_max_traces, store_dir=settings.data_dir)
        receiver = OtlpReceiver(store, COLLECTOR_HOST, port, logs=logs).start()
        mark_collector_started(settings.data_dir, receiver.endpoint)
        try:
            yield receiver
        finally:
            mark_collector_stopped(settings.data_dir)
            receiver.stop()


@contextmanager
def _the_only_collector_of(data_dir: Path) -> Iterator[None]:
    """Hold the data directory's lock file while collecting: its files are rewritten as they
    grow, and two writers would lose each other's spans. A lock, not only the mark a running
    collector leaves: two collectors started a few seconds apart both found no mark yet (a
    new user's). The kernel releases it with the process, however that ends."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with (data_dir / LOCK_FILE).open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = running_collector(data_dir)
            who = f" (pid {other['pid']})" if other else ""
            raise CliError(
                f"another collector{who} records into {data_dir}.",
                hint="stop it (Ctrl-C), or give this one a data directory of its own "
                "(RESERVATIONS_DATA_DIR, or --data-dir).",
            ) from None
        yield


def by_default(endpoint: str) -> str:
    """How services run by hand reach ``endpoint``: by default on the OTLP port, else with
    the variable set (it said "by default" on any port, a new user's)."""
    if urlsplit(endpoint).port == DEFAULT_OTLP_PORT:
        return "by default"
    return f"with OTEL_EXPORTER_OTLP_ENDPOINT={endpoint}"


def serve(settings: CliSettings, console: Console) -> None:
    """``reservations collector``: only the collector, until Ctrl-C, SIGTERM or SIGHUP."""
    stop = threading.Event()

    def handle(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handle)
    with embedded_collector(settings) as receiver:
        console.print(
            f"collector on [bold]{receiver.endpoint}[/] (OTLP/gRPC), traces kept in "
            f"[bold]{settings.data_dir / TRACES_FILE}[/]; services run by hand export here "
            f"{by_default(receiver.endpoint)}. Then: {command()} trace --last  "
            "[dim](Ctrl-C stops it)[/]",
            highlight=False,
        )
        while not stop.wait(0.5):
            pass
    console.print(f"[green]stopped[/]: {receiver.store.received} spans received")
