"""`reservations run` starting, stopping and refusing to start, as a real process: Ctrl-C,
SIGKILL, SIGHUP and a SIGTERM sent twice stop every child; a missing broker, a vhost the
broker does not have, or another system already consuming the work queues is one clear
sentence before anything starts.

Each test runs its own `reservations run` (so no other system may be running in the session's
vhost meanwhile: the module-scoped one of test_run.py is stopped before this module starts)."""

import asyncio
import signal
import subprocess
import time
from pathlib import Path

import aio_pika
import httpx
import psutil
import pytest
from aio_pika.abc import AbstractIncomingMessage
from yarl import URL

from devtools.addresses import free_port, port_is_free
from messaging import topology
from tests.cli.conftest import cli_env
from tests.cli.running import cli_once, start_cli

pytestmark = pytest.mark.e2e


def test_ctrl_c_stops_every_process_and_exits_0(amqp_url: str, tmp_path: Path) -> None:
    running = start_cli(amqp_url, tmp_path)
    children = psutil.Process(running.popen.pid).children(recursive=True)
    assert len(children) >= 3
    assert running.interrupt(within=20) == 0, running.log()
    gone, alive = psutil.wait_procs(children, timeout=5)
    assert not alive, alive
    assert "stopped: every process exited" in running.log()
    assert "killing" not in running.log()  # each stopped on SIGTERM, within the bound


def test_a_quiet_log_level_does_not_hide_that_the_workers_are_ready(
    amqp_url: str, tmp_path: Path
) -> None:
    """With LOG_LEVEL=WARNING a worker writes no line when it starts consuming; it says so
    over NOTIFY_SOCKET instead (failed before: "not ready within 60 s"), and the system
    serves."""
    running = start_cli(amqp_url, tmp_path, LOG_LEVEL="WARNING")
    reserved = running.cli("reserve", "alice", "book-1")
    assert reserved.returncode == 0, reserved.stderr
    assert reserved.stdout.startswith("confirmed HTTP 201"), reserved.stdout
    assert "consuming" not in running.log()  # the workers wrote no line when they started
    assert running.interrupt(within=20) == 0, running.log()


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


def test_a_sigterm_delivered_twice_is_one_clean_stop(amqp_url: str, tmp_path: Path) -> None:
    """``timeout 60 make demo``: make passes its SIGTERM on, and timeout signals the whole
    process group, so the CLI gets two. Taken as "hurry" (as a second Ctrl-C is), it killed
    every child mid-stop. The API (stopped first) is held suspended meanwhile, so the second
    signal surely arrives while the CLI waits for it."""
    running = start_cli(amqp_url, tmp_path)
    children = psutil.Process(running.popen.pid).children(recursive=True)
    [api] = [child for child in children if "api" in child.cmdline()]
    api.suspend()
    try:
        running.popen.send_signal(signal.SIGTERM)
        time.sleep(0.5)  # the first one taken: Python runs one handler for signals that coalesce
        running.popen.send_signal(signal.SIGTERM)
        time.sleep(1)
        assert running.popen.poll() is None, running.log()  # still waiting for the API
        assert "killing" not in running.log(), running.log()
    finally:
        api.resume()
    assert running.popen.wait(20) == 0, running.log()
    _, alive = psutil.wait_procs(children, timeout=5)
    assert not alive, alive
    assert "stopped: every process exited" in running.log()
    assert "killing" not in running.log(), running.log()


def test_run_without_a_broker_says_how_to_start_one(tmp_path: Path) -> None:
    closed = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    done = cli_once("run", env=cli_env(closed, tmp_path / ".data"), cwd=tmp_path)
    assert done.returncode == 1
    # The line a service writes (README, Troubleshooting), without the password.
    assert f"RabbitMQ is unreachable at amqp://guest:***@{closed.split('@')[1]}" in done.stderr
    assert "guest:guest" not in done.stderr
    assert "rabbitmq-server -detached" in done.stderr and "docker compose up" in done.stderr


def test_run_refuses_to_start_beside_a_running_system(amqp_url: str, tmp_path: Path) -> None:
    """Another system's worker on the same queues would take this run's messages: say so
    before any child starts."""

    async def refuse_with_a_worker_consuming() -> "subprocess.CompletedProcess[str]":
        async with await aio_pika.connect(amqp_url) as connection:
            channel = await connection.channel()
            declared = await topology.declare(channel)
            await declared.queues[topology.CREDIT_CHECK.name].consume(_leave_it)
            return await asyncio.to_thread(lambda: cli_once("run", env=env, cwd=tmp_path))

    env = cli_env(amqp_url, tmp_path / ".data", DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/x.db")
    done = asyncio.run(refuse_with_a_worker_consuming())
    assert done.returncode == 1, done.stdout + done.stderr
    assert "workers already consume this broker's work queues" in done.stderr, done.stderr
    assert "credit-check (1) consumer(s)" in done.stderr, done.stderr
    assert "give this one a vhost of its own" in done.stderr, done.stderr
    assert "guest:guest" not in done.stderr
    assert not (tmp_path / "x.db").exists()  # refused before migrating or starting anything
    assert port_is_free("127.0.0.1", int(env["API_URL"].rsplit(":", 1)[1]))


def test_run_with_a_vhost_the_broker_does_not_have_says_so(amqp_url: str, tmp_path: Path) -> None:
    missing = str(URL(amqp_url).with_path("/no-such-vhost"))
    done = cli_once("run", env=cli_env(missing, tmp_path / ".data"), cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "would not open vhost 'no-such-vhost' for user" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_run_refuses_every_bad_setting_of_its_services_in_one_line(tmp_path: Path) -> None:
    """Before anything starts: a `LOG_LEVEL=foo` started all three services, each refused it,
    and the run ended with their exit codes, without saying which setting."""
    env = cli_env(
        "amqp://guest:guest@127.0.0.1:5672/",
        tmp_path / ".data",
        LOG_LEVEL="foo",
        AMQP_PREFETCH="many",
        MAX_HEAD_BYTES="1",
        WORKER_SHUTDOWN_TIMEOUT="0",
    )
    done = cli_once("run", env=env, cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    [error] = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    for setting in ("LOG_LEVEL", "AMQP_PREFETCH", "MAX_HEAD_BYTES", "WORKER_SHUTDOWN_TIMEOUT"):
        assert f"{setting}: " in error, error
    assert "hint: see README.md#configuration" in done.stderr
    assert not (tmp_path / ".data").exists()  # nothing migrated, nothing started


@pytest.mark.parametrize(
    ("api_url", "said"),
    [
        ("notaurl", "API_URL: use http://host:port"),
        ("http://127.0.0.1:99999", "API_URL: port 99999 is not one TCP has"),
    ],
)
def test_an_api_url_the_cli_cannot_use_is_one_line(tmp_path: Path, api_url: str, said: str) -> None:
    """`notaurl` had the API bind port 80 and the run wait 60 s; a port out of range ended
    in a traceback."""
    env = cli_env("amqp://guest:guest@127.0.0.1:5672/", tmp_path / ".data", API_URL=api_url)
    for command in (("run",), ("users",)):
        done = cli_once(*command, env=env, cwd=tmp_path)
        assert done.returncode == 1, done.stdout + done.stderr
        assert f"error: invalid setting {said}" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr


@pytest.mark.parametrize("command", [("reserve", "alice", "book-1"), ("load", "-n", "2")])
def test_a_command_without_an_api_says_so(tmp_path: Path, command: tuple[str, ...]) -> None:
    env = cli_env("amqp://unused/", tmp_path)
    done = cli_once(*command, env=env)
    assert done.returncode == 1
    assert f"the API is not reachable at {env['API_URL']}" in done.stderr
    assert "hint: start everything with" in done.stderr and "reservations run" in done.stderr


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


async def _leave_it(message: AbstractIncomingMessage) -> None:
    """A worker of another system: it takes the message and never settles it."""
