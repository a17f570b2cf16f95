"""Tracing is never on the critical path: with the OTLP backend down, the API and the workers
keep answering, and SIGTERM still stops each of them within a bound.

Two ways to be down: (a) nothing listens on the port (connection refused at once), and (b) a
"black hole" that accepts TCP connections and never says a word (every export waits for its
deadline). The spans are lost, the reservations are not.
"""

import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests import infra
from tests.stack import System

REQUESTS = 200
CREDITS, PRICE = 1_000, 10  # 100 confirmed, then 100 rejected
SHUTDOWN_BOUND_S = 20.0


class BlackHole:
    """Accepts TCP connections on loopback and holds them open, never reading or writing."""

    def __init__(self, max_held: int = 64) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self._max_held = max_held
        self._held: list[socket.socket] = []
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="otlp-black-hole", daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            self._held.append(connection)
            if len(self._held) > self._max_held:  # bounded: drop the oldest
                self._held.pop(0).close()

    def __enter__(self) -> "BlackHole":
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._listener.close()
        for connection in self._held:
            connection.close()


@pytest.fixture(params=["closed-port", "black-hole"])
def dead_backend(request: pytest.FixtureRequest) -> Iterator[tuple[str, BlackHole | None]]:
    if request.param == "closed-port":
        yield f"http://127.0.0.1:{infra.free_port()}", None
        return
    with BlackHole() as hole:
        yield f"http://127.0.0.1:{hole.port}", hole


def _sigterm_all(system: System, bound: float) -> dict[str, tuple[int | None, float]]:
    """SIGTERM every process at once; wait at most ``bound`` seconds for each, then SIGKILL.
    Returns name -> (exit code, or None if it had to be killed; seconds to exit)."""
    started = time.monotonic()
    for process in system.running:
        process.popen.send_signal(signal.SIGTERM)
    results: dict[str, tuple[int | None, float]] = {}
    for process in system.running:
        remaining = max(0.0, bound - (time.monotonic() - started))
        try:
            code: int | None = process.popen.wait(remaining)
        except subprocess.TimeoutExpired:
            code = None
            process.popen.kill()
            process.popen.wait(5)
        results[process.name] = (code, round(time.monotonic() - started, 1))
    return results


def test_services_keep_answering_and_stop_when_the_tracing_backend_is_down(
    make_system: Callable[[], System],
    api_port: int,
    dead_backend: tuple[str, BlackHole | None],
) -> None:
    endpoint, hole = dead_backend
    system = make_system()
    system.seed({"dora": CREDITS}, {"lamp": PRICE})
    system.base_env["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint
    if hole is None:
        # The OTLP exporters share one logger whose DuplicateFilter keys on the message
        # template: the first signal to fail would hide the traces exporter's own line. With
        # the closed port, traces alone are exported, so its failure line must show.
        system.base_env |= {"OTEL_LOGS_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none"}
    system.start_worker("workers.credit_check")
    system.start_worker("workers.fulfilment")
    system.start_api(api_port)

    with (
        httpx.Client(base_url=system.api_url, timeout=30) as client,
        ThreadPoolExecutor(max_workers=16) as pool,
    ):
        responses = list(
            pool.map(
                lambda _: client.post(
                    "/reservations", json={"username": "dora", "item_id": "lamp"}
                ),
                range(REQUESTS),
            )
        )
        credits = client.get("/users/dora").json()["credits"]
    statuses = Counter(response.status_code for response in responses)
    assert set(statuses) <= {201, 409}, {r.status_code: r.text for r in responses}
    assert statuses == {201: CREDITS // PRICE, 409: REQUESTS - CREDITS // PRICE}
    assert credits == 0

    if hole is not None:
        assert hole.accepted > 0, "the exporters never even tried the black hole"

    stopping = list(system.running)
    results = _sigterm_all(system, SHUTDOWN_BOUND_S)
    system.running.clear()  # stopped here; the fixture must not stop them again
    logs = {process.name: process.log() for process in stopping}
    if hole is None:  # every exporter really tried, and said it failed
        target = f"traces to {endpoint.removeprefix('http://')}"
        assert all(target in log for log in logs.values()), logs
    kind = "black hole" if hole is not None else "closed port"
    sys.stdout.write(
        f"\n[{kind}] {REQUESTS} requests: {dict(statuses)}; "
        f"SIGTERM -> (exit code, seconds): {results}\n"
    )
    for name, (code, _) in results.items():
        assert code is not None, (
            f"{name} did not exit within {SHUTDOWN_BOUND_S}s of SIGTERM with the tracing "
            f"backend down ({kind}); it was killed.\n{logs[name][-3_000:]}"
        )
    # uvicorn re-raises SIGTERM after its graceful shutdown: -SIGTERM is a clean exit.
    assert results["api"][0] in (0, -signal.SIGTERM)
    assert results["workers.credit_check"][0] == 0
    assert results["workers.fulfilment"][0] == 0
