"""`reservations run` as a real process: it starts the system, the other commands talk to it,
and Ctrl-C stops everything."""

import asyncio
import re
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from devtools.addresses import free_port
from devtools.processes import Process
from tests.cli.conftest import RESERVATIONS, cli_env
from tests.system import purge_work_queues

pytestmark = pytest.mark.e2e

SERVICES = ("reservations-api", "credit-check-worker", "fulfilment-worker")


@dataclass
class RunningCli:
    process: Process  # `reservations run`
    env: dict[str, str]

    @property
    def popen(self) -> "subprocess.Popen[bytes]":
        return self.process.popen

    def log(self) -> str:
        return self.process.log()

    def cli(self, *args: str, timeout: float = 30) -> "subprocess.CompletedProcess[str]":
        return subprocess.run(
            [str(RESERVATIONS), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def interrupt(self, within: float = 20) -> int:
        self.popen.send_signal(signal.SIGINT)
        return self.popen.wait(within)


def start_cli(amqp_url: str, tmp: Path) -> RunningCli:
    env = cli_env(amqp_url, tmp / ".data", DATABASE_URL=f"sqlite+aiosqlite:///{tmp}/cli.db")
    process = Process.start(
        "reservations run", [str(RESERVATIONS), "run"], env, log_path=tmp / "run.log", cwd=tmp
    )

    def ready() -> None:
        assert "Ctrl-C stops everything" in process.log()  # the CLI's own ready panel
        assert httpx.get(f"{env['API_URL']}/readyz", timeout=1).status_code == 200

    process.wait_ready(ready, within=60, retry_on=(AssertionError, httpx.HTTPError))
    return RunningCli(process, env)


@pytest.fixture(scope="module")
def running(amqp_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCli]:
    asyncio.run(purge_work_queues(amqp_url))
    running = start_cli(amqp_url, tmp_path_factory.mktemp("cli-run"))
    yield running
    if running.popen.poll() is None:
        running.interrupt()


def test_reserve_prints_the_outcome_and_a_trace_that_trace_renders(running: RunningCli) -> None:
    reserved = running.cli("reserve", "alice", "book-1")
    assert reserved.returncode == 0, reserved.stderr
    assert reserved.stdout.startswith("confirmed HTTP 201  alice → book-1")
    assert re.search(r"credits left\s+90", reserved.stdout)
    trace_id = re.search(r"trace id\s+([0-9a-f]{32})", reserved.stdout)
    assert trace_id, reserved.stdout

    shown = running.cli("trace", trace_id[1], "--source", "collector", "--wait", "15")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].startswith(f"trace {trace_id[1]} · ")
    assert lines[2].startswith("POST /reservations") and "SERVER" in lines[2]
    for service in SERVICES:  # the async fulfilment tail included
        assert service in shown.stdout, shown.stdout
    assert "process reservations:reservation.confirmed:fulfilment" in shown.stdout

    assert running.cli("users").returncode == 0  # a newer trace, but not a reservation
    last = running.cli("trace", "--last", "--attrs")
    assert last.returncode == 0, last.stderr
    assert last.stdout.splitlines()[0].startswith(f"trace {trace_id[1]} · ")
    assert re.match(r"the last reservation, \d+ s ago\.", last.stderr), last.stderr
    assert "reservation.outcome = confirmed" in last.stdout


def test_a_rejected_reservation_exits_non_zero(running: RunningCli) -> None:
    rejected = running.cli("reserve", "bob", "course-1")
    assert rejected.returncode == 1
    assert rejected.stdout.startswith("rejected_insufficient_credits HTTP 409")
    assert "error: reservation not confirmed: not enough credits" in rejected.stderr
    assert re.search(r"trace id\s+[0-9a-f]{32}", rejected.stdout)


def test_users_and_top_up(running: RunningCli) -> None:
    topped = running.cli("top-up", "carol", "7")
    assert topped.returncode == 0, topped.stderr
    assert topped.stdout.strip() == "carol now has 47 credits (+7)"
    listed = running.cli("users")
    assert listed.returncode == 0, listed.stderr
    assert re.search(r"carol\s+│\s+47", listed.stdout)
    assert re.search(r"course-1\s+│\s+60", listed.stdout)
    unknown = running.cli("top-up", "nobody", "7")
    assert unknown.returncode == 1 and "unknown user 'nobody'" in unknown.stderr


def test_load_sends_n_reservations_and_summarises(running: RunningCli) -> None:
    loaded = running.cli("load", "-n", "20", "-c", "4", "carol", "book-1")
    assert loaded.returncode == 0, loaded.stderr
    assert "20 reservations, concurrency 4" in loaded.stdout
    counts = dict(re.findall(r"│ (\d{3} \w+)\s+│\s+(\d+) │", loaded.stdout))
    assert sum(map(int, counts.values())) == 20, loaded.stdout
    assert set(counts) <= {"201 confirmed", "409 rejected_insufficient_credits"}
    assert "p50 latency" in loaded.stdout and "p99 latency" in loaded.stdout


def test_peek_shows_the_message_whose_traceparent_is_the_producer_span(
    running: RunningCli,
) -> None:
    assert running.cli("top-up", "carol", "25").returncode == 0  # whatever earlier tests spent
    peeked = running.cli("peek", "carol", "book-2")
    assert peeked.returncode == 0, peeked.stdout[-2000:] + peeked.stderr
    out = peeked.stdout
    # The worker still got the original: the reservation was confirmed.
    assert out.startswith("confirmed HTTP 201  carol → book-2"), out
    for field in ("routing_key", "reservation.requested", "correlation_id", "reply_to"):
        assert field in out, out
    assert re.search(r"content_type\s+application/json", out), out
    assert re.search(r"delivery_mode\s+2 \(persistent\)", out), out
    header = re.search(r"headers\.traceparent\s+\"00-([0-9a-f]{32})-([0-9a-f]{16})-0[13]\"", out)
    assert header, out
    trace_id, span_id = header[1], header[2]  # flags: sampled (W3C level 2 adds random, 02)
    assert re.search(rf"trace id\s+{trace_id}\s+\(the reservation's trace: True\)", out), out
    assert re.search(
        rf"span id\s+{span_id}\s+= publish reservations:reservation.requested "
        r"\(PRODUCER, reservations-api\)",
        out,
    ), out
    assert f"trace {trace_id} · " in out  # the waterfall of that same trace follows
    assert "process reservations:reservation.requested:credit-check" in out


def test_ctrl_c_stops_every_process_and_exits_0(amqp_url: str, tmp_path: Path) -> None:
    running = start_cli(amqp_url, tmp_path)
    children = psutil.Process(running.popen.pid).children(recursive=True)
    assert len(children) >= 3
    assert running.interrupt(within=20) == 0, running.log()
    gone, alive = psutil.wait_procs(children, timeout=5)
    assert not alive, alive
    assert "stopped: every process exited" in running.log()
    assert "killing" not in running.log()  # each stopped on SIGTERM, within the bound


def test_no_child_outlives_a_killed_cli(amqp_url: str, tmp_path: Path) -> None:
    running = start_cli(amqp_url, tmp_path)
    children = psutil.Process(running.popen.pid).children(recursive=True)
    assert len(children) >= 3
    running.popen.send_signal(signal.SIGKILL)  # no chance to stop anything itself
    assert running.popen.wait(10) == -signal.SIGKILL
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"survived `reservations run`: {[c.cmdline() for c in alive]}"
    with pytest.raises(httpx.ConnectError):  # the API's port is free for the next run
        httpx.get(f"{running.env['API_URL']}/healthz", timeout=2)


def test_a_closed_terminal_sighup_stops_every_process(amqp_url: str, tmp_path: Path) -> None:
    running = start_cli(amqp_url, tmp_path)
    children = psutil.Process(running.popen.pid).children(recursive=True)
    running.popen.send_signal(signal.SIGHUP)
    assert running.popen.wait(20) == 0, running.log()
    _, alive = psutil.wait_procs(children, timeout=5)
    assert not alive, alive
    assert "stopped: every process exited" in running.log()


def test_run_without_a_broker_says_how_to_start_one(tmp_path: Path) -> None:
    closed = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    done = subprocess.run(
        [str(RESERVATIONS), "run"],
        env=cli_env(closed, tmp_path / ".data"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    # The line a service writes (README, Troubleshooting), without the password.
    assert f"RabbitMQ is unreachable at amqp://guest:***@{closed.split('@')[1]}" in done.stderr
    assert "guest:guest" not in done.stderr
    assert "rabbitmq-server -detached" in done.stderr and "docker compose up" in done.stderr


def test_reserve_without_an_api_says_so(tmp_path: Path) -> None:
    env = cli_env("amqp://unused/", tmp_path)
    done = subprocess.run(
        [str(RESERVATIONS), "reserve", "alice", "book-1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    assert f"the API is not reachable at {env['API_URL']}" in done.stderr
    assert "reservations run" in done.stderr


def test_a_child_that_dies_is_reported_and_the_rest_stopped(amqp_url: str, tmp_path: Path) -> None:
    running = start_cli(amqp_url, tmp_path)
    children = psutil.Process(running.popen.pid).children()
    fulfilment = next(c for c in children if "workers.fulfilment" in c.cmdline())
    fulfilment.kill()
    assert running.popen.wait(30) == 1
    log = running.log()
    assert "error: fulfilment exited unexpectedly (exit code -9); stopped everything else." in log
    _, alive = psutil.wait_procs(children, timeout=5)
    assert not alive, alive
