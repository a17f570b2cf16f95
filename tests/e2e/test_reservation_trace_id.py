"""A reservation keeps the trace id of the request that created it (issue 14, point 9).

Someone polling ``GET /reservations/{id}`` after a 202 finds the reservation's trace there
(``trace_id``; the GET's own is ``request_trace_id``), and ``reservations trace
<reservation-id>`` shows that trace's waterfall.
"""

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from cli.collector import OtlpReceiver, SpanStore
from tests.stack import System
from tests.traces import REQUEST_PROCESS, wait_for_trace
from tests.waiting import eventually

RESERVATIONS = Path(sys.executable).with_name("reservations")  # the CLI's console script


@pytest.fixture
def collector_dir(tmp_path: Path) -> Iterator[tuple[OtlpReceiver, Path]]:
    """A receiver that also writes the collector's traces.jsonl, as `reservations run` does."""
    data_dir = tmp_path / "collector"
    receiver = OtlpReceiver(SpanStore(store_dir=data_dir)).start()
    yield receiver, data_dir
    receiver.stop()


def test_a_reservation_keeps_the_trace_of_the_request_that_created_it(
    # The collector first, so it is stopped after the processes' final exports.
    collector_dir: tuple[OtlpReceiver, Path],
    make_system: Callable[[], System],
    api_port: int,
) -> None:
    receiver, data_dir = collector_dir
    system = make_system()
    system.base_env["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.endpoint
    # No worker yet: the API gives up after 1 s and answers 202.
    system.start_api(api_port, RESERVATION_REPLY_TIMEOUT="1")
    url = system.api_url
    asked = httpx.post(
        f"{url}/reservations", json={"username": "alice", "item_id": "book-1"}, timeout=10
    )
    assert asked.status_code == 202, asked.text
    created_in = asked.json()["trace_id"]
    assert len(created_in) == 32
    location = asked.headers["location"]

    system.start_worker("workers.credit_check")
    for attempt in eventually(20, every=0.1):
        with attempt:
            view = httpx.get(f"{url}{location}", timeout=10)
            assert view.status_code == 200, view.text
    body = view.json()
    assert body["trace_id"] == created_in
    assert body["request_trace_id"] == view.headers["x-trace-id"] != created_in

    # A direct 201 keeps its trace too.
    confirmed = httpx.post(
        f"{url}/reservations", json={"username": "alice", "item_id": "book-1"}, timeout=10
    ).json()
    again = httpx.get(f"{url}/reservations/{confirmed['reservation_id']}", timeout=10).json()
    assert again["trace_id"] == confirmed["trace_id"]

    # The CLI finds the trace by reservation id.
    wait_for_trace(receiver.store, created_in, {REQUEST_PROCESS})
    shown = subprocess.run(
        [str(RESERVATIONS), "trace", body["reservation_id"], "--source", "collector"],
        env={
            **system.base_env,
            "API_URL": url,
            "RESERVATIONS_DATA_DIR": str(data_dir),
            "NO_COLOR": "1",
            "COLUMNS": "160",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert f"trace {created_in}" in shown.stdout, shown.stdout
    assert REQUEST_PROCESS in shown.stdout, shown.stdout
