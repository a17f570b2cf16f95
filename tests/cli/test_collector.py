"""`reservations collector` (the embedded collector alone, for services run by hand) and
`reservations reset` (start from scratch), as real processes."""

import fcntl
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind

from cli.trace_files import LOCK_FILE
from devtools.addresses import free_port
from devtools.processes import Process
from devtools.waiting import eventually
from tests.cli.conftest import RESERVATIONS, cli_env

pytestmark = pytest.mark.e2e


def reservations(env: dict[str, str], cwd: Path, *args: str) -> "subprocess.CompletedProcess[str]":
    return subprocess.run(
        [str(RESERVATIONS), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=30
    )


def export_a_reservation(endpoint: str) -> str:
    """What the API would send: a reservation's `POST /reservations` root span, then one
    refused (415, 422: no ``reservation.id``) and a `GET /users`."""
    provider = TracerProvider(resource=Resource({"service.name": "reservations-api"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint, insecure=True)))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("POST /reservations", kind=SpanKind.SERVER) as span:
        span.set_attribute("reservation.id", "5f0c6a52-6c2e-4d7e-9b6b-3d8c1b0e2a11")
        trace_id = format(span.get_span_context().trace_id, "032x")
    # Newer, and not reservations: a request refused before it became one, and a read.
    with tracer.start_as_current_span("POST /reservations", kind=SpanKind.SERVER):
        pass
    with tracer.start_as_current_span("GET /users", kind=SpanKind.SERVER):
        pass
    provider.shutdown()
    return trace_id


def test_the_collector_alone_records_what_trace_last_shows(tmp_path: Path) -> None:
    env = cli_env("amqp://unused/", tmp_path / ".data")
    collector = Process.start(
        "collector",
        [str(RESERVATIONS), "collector"],
        env,
        log_path=tmp_path / "c.log",
        cwd=tmp_path,
    )
    try:
        collector.wait_for_log("Ctrl-C stops it", within=30)
        endpoint = f"http://127.0.0.1:{env['RESERVATIONS_COLLECTOR_PORT']}"
        assert f"collector on {endpoint} (OTLP/gRPC)" in collector.log()
        trace_id = export_a_reservation(endpoint)

        shown = reservations(env, tmp_path, "trace", "--last", "--wait", "2")
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.startswith(f"trace {trace_id} · 1 span · 1 service · ")
        assert "POST /reservations" in shown.stdout
        assert shown.stderr.startswith("the last reservation, ")

        refused = reservations(env, tmp_path, "reset")
        assert refused.returncode == 1
        assert "the system is running" in refused.stderr

        # A second collector on another port but the same data directory would rewrite the
        # files the first appends to: refused, saying which process records there.
        other_port = {**env, "RESERVATIONS_COLLECTOR_PORT": str(free_port())}
        second = reservations(other_port, tmp_path, "collector")
        assert second.returncode == 1, second.stdout
        assert f"another collector (pid {collector.popen.pid}) records into" in second.stderr
    finally:
        assert collector.stop(within=10) == 0, collector.log()
    assert "spans received" in collector.log()

    stale = reservations(env, tmp_path, "trace", "--last", "--wait", "1")
    assert stale.returncode == 0, stale.stderr
    assert "no collector is recording there now" in stale.stderr


def test_reset_removes_the_data_and_keeps_the_rest(tmp_path: Path) -> None:
    data = tmp_path / ".data"
    data.mkdir()
    for name in ("reservations.db", "reservations.db-wal", "traces.jsonl"):
        (data / name).write_text("x")
    (data / "notes.txt").write_text("mine")
    (tmp_path / ".venv").mkdir()
    env = cli_env("amqp://unused/", data)

    done = reservations(env, tmp_path, "reset")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in data.iterdir()) == ["notes.txt"]
    assert (tmp_path / ".venv").is_dir()
    assert "next `reservations run` starts from the seed data" in done.stdout

    again = reservations(env, tmp_path, "reset")
    assert again.returncode == 0 and f"{data} was clean" in again.stdout


def test_reset_refuses_while_a_process_has_the_database_open_whatever_holds_the_port(
    tmp_path: Path,
) -> None:
    """Another system on the API's port (compose's api, say) is not this data directory's:
    reset refused all the same until round twenty-eight. A process with the database open
    (a service run by hand) is: reset refuses, naming it."""
    data = tmp_path / ".data"
    data.mkdir()
    (data / "reservations.db").write_text("x")
    env = cli_env("amqp://unused/", data)
    api_port = int(env["API_URL"].rsplit(":", 1)[1])
    with socket.create_server(("127.0.0.1", api_port)):  # someone else's API
        holder = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys,time; f = open(sys.argv[1]); time.sleep(60)",
                str(data / "reservations.db"),
            ]
        )
        try:
            for attempt in eventually(10, every=0.05):
                with attempt:
                    assert str(data / "reservations.db") in {
                        os.readlink(fd) for fd in Path(f"/proc/{holder.pid}/fd").iterdir()
                    }
            refused = reservations(env, tmp_path, "reset")
        finally:
            holder.kill()
            holder.wait()
        assert refused.returncode == 1, refused.stdout
        assert f"the system is running (pid {holder.pid} has files of {data} open)" in (
            refused.stderr
        )
        assert (data / "reservations.db").exists()
        done = reservations(env, tmp_path, "reset")
    assert done.returncode == 0, done.stderr
    assert not data.exists()


def test_a_collector_starting_beside_one_not_yet_marked_is_refused(tmp_path: Path) -> None:
    """Two collectors started a few seconds apart both found no mark (the first writes it once
    it listens) and both recorded into one directory (a new user's). The lock a collector
    holds from its first step is what refuses the second: held here by the test itself."""
    env = cli_env("amqp://unused/", tmp_path / ".data")
    (tmp_path / ".data").mkdir()
    with (tmp_path / ".data" / LOCK_FILE).open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        second = reservations(env, tmp_path, "collector")
    assert second.returncode == 1, second.stdout
    assert f"another collector records into {tmp_path / '.data'}." in second.stderr


def test_reset_leaves_a_held_lock_file_and_refuses(tmp_path: Path) -> None:
    """A collector holds its lock before it writes its mark: a reset in between removed the
    lock file, and the next collector locked a new one beside the first (a review's)."""
    env = cli_env("amqp://unused/", tmp_path / ".data")
    (tmp_path / ".data").mkdir()
    (tmp_path / ".data" / "traces.jsonl").write_text("")
    with (tmp_path / ".data" / LOCK_FILE).open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        refused = reservations(env, tmp_path, "reset")
    assert refused.returncode == 1 and "the system is running" in refused.stderr
    assert (tmp_path / ".data" / LOCK_FILE).exists()
    assert (tmp_path / ".data" / "traces.jsonl").exists()
    done = reservations(env, tmp_path, "reset")  # the lock free: reset as before
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / ".data").exists()
