"""Fixtures for the CLI: a real recorded trace, a running collector's endpoint, a stand-in
Tempo, and the CLI as a process."""

import json
import os
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from cli.spans import SpanRecord
from devtools.addresses import free_port

FIXTURES = Path(__file__).with_name("fixtures")
ROOT = Path(__file__).resolve().parents[2]
# A real Tempo 3.0.3 answer, kept in the repository (tests/fixtures/README.md says where from).
TEMPO_V2_SAMPLE = ROOT / "tests" / "fixtures" / "tempo-3.0.3-v2-trace-by-id.json"
RESERVATIONS = Path(sys.executable).with_name("reservations")  # the console script


@pytest.fixture
def confirmed_trace() -> list[SpanRecord]:
    """A confirmed reservation recorded once from a real `reservations run` (18 spans, three
    services, fulfilment tail included)."""
    data = json.loads((FIXTURES / "confirmed_trace.json").read_text())
    return [SpanRecord.from_dict(span) for span in data]


class FakeTempo:
    """Answers ``GET /api/v2/traces/{id}`` from ``traces``; a callable answers per request."""

    def __init__(self) -> None:
        self.traces: dict[str, Callable[[], tuple[int, Any]]] = {}
        self.requests: list[str] = []
        self.url = ""

    def serve(self, trace_id: str, status: int, body: Any) -> None:
        self.traces[trace_id] = lambda: (status, body)


@pytest.fixture
def collector() -> Iterator[str]:
    """The endpoint of something listening, as a running collector's mark names one."""
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        yield f"http://127.0.0.1:{listening.getsockname()[1]}"


@pytest.fixture
def fake_tempo() -> Iterator[FakeTempo]:
    tempo = FakeTempo()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server hook
            tempo.requests.append(self.path)
            trace_id = self.path.removeprefix("/api/v2/traces/")
            # Tempo 3 answers an unknown trace id with 200 and an empty trace.
            answer = tempo.traces.get(trace_id, lambda: (200, {"trace": {}, "metrics": {}}))
            status, body = answer()
            payload = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    tempo.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield tempo
    server.shutdown()
    server.server_close()
    thread.join(5)


def cli_env(amqp_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    """Everything the CLI and its children need, isolated from the developer's setup: this
    session's vhost, a SQLite file and the collector's traces under ``data_dir``, free ports."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OTEL_", "DATABASE_", "API_", "RESERVATIONS_", "DEMO_"))
    }
    env.update(
        {
            "AMQP_URL": amqp_url,
            "API_URL": f"http://127.0.0.1:{free_port()}",
            "RESERVATIONS_DATA_DIR": str(data_dir),
            "RESERVATIONS_COLLECTOR_PORT": str(free_port()),
            "TEMPO_URL": f"http://127.0.0.1:{free_port()}",  # nothing there
            "PYTHONUNBUFFERED": "1",
            "COLUMNS": "160",
        }
    )
    env.update(extra)
    return env
