"""The one process wrapper, on real child processes."""

import signal
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from devtools.processes import CLEAN_EXIT_CODES, Process, ProcessExited, python_module

ROOT = Path(__file__).resolve().parents[2]
IGNORES_SIGTERM = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); " + (
    "print('ready', flush=True); time.sleep(60)"
)


def start(tmp_path: Path, code: str, name: str = "child") -> Process:
    return Process.start(name, [sys.executable, "-c", code], {}, log_path=tmp_path / f"{name}.log")


def test_a_process_that_stops_on_sigterm_exits_cleanly(tmp_path: Path) -> None:
    process = start(tmp_path, "import time; print('up', flush=True); time.sleep(60)")
    process.wait_for_log("up", within=10)
    assert process.stop(within=10) == -signal.SIGTERM
    assert -signal.SIGTERM in CLEAN_EXIT_CODES and not process.running


def test_one_that_ignores_sigterm_is_killed_after_the_bound(tmp_path: Path) -> None:
    process = start(tmp_path, IGNORES_SIGTERM)
    process.wait_for_log("ready", within=10)
    began = time.monotonic()
    assert process.terminate(within=0.5) is False
    assert 0.5 <= time.monotonic() - began < 5
    assert process.stop(within=0.1) == -signal.SIGKILL


def test_hurry_cuts_the_graceful_wait_short(tmp_path: Path) -> None:
    process = start(tmp_path, IGNORES_SIGTERM)
    process.wait_for_log("ready", within=10)
    hurry = threading.Event()
    hurry.set()
    began = time.monotonic()
    assert process.stop(within=30, hurry=hurry) == -signal.SIGKILL
    assert time.monotonic() - began < 5


def test_waiting_for_a_process_that_died_fails_at_once_with_its_log(tmp_path: Path) -> None:
    process = start(tmp_path, "print('boom: no config'); raise SystemExit(3)")
    began = time.monotonic()

    def never_ready() -> None:
        raise AssertionError("not ready")

    with pytest.raises(ProcessExited, match=r"exit code 3\):\nboom: no config"):
        process.wait_ready(never_ready, within=30)
    assert time.monotonic() - began < 10


def test_log_since_reads_only_what_came_after_an_offset(tmp_path: Path) -> None:
    process = start(tmp_path, "import sys; sys.stdin.readline()", name="quiet")
    process.stop()
    path = tmp_path / "quiet.log"
    path.write_text("before\n")
    offset = process.log_offset()
    with path.open("a") as log:
        log.write("after\n")
    assert process.log_since(offset) == "after\n"


def test_stdout_to_a_pipe_and_stdin_from_one(tmp_path: Path) -> None:
    process = Process.start(
        "echo",
        python_module("json.tool"),
        {},
        log_path=tmp_path / "echo.log",
        pipe_stdout=True,
        stdin=True,
    )
    assert process.popen.stdin is not None and process.popen.stdout is not None
    process.popen.stdin.write(b'{"a": 1}')
    process.popen.stdin.close()
    assert b'"a": 1' in process.popen.stdout.read()
    assert process.wait_exit(10) == 0


PARENT = """
import sys
from devtools.processes import Process
child = Process.start("child", [sys.executable, "-c", "import time; time.sleep(60)"], {})
print(child.pid, flush=True)
child.popen.wait()
"""


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_child_never_outlives_its_parent(tmp_path: Path, sig: signal.Signals) -> None:
    parent = Process.start(
        "parent", [sys.executable, "-c", PARENT], {"PYTHONPATH": str(ROOT)}, pipe_stdout=True
    )
    assert parent.popen.stdout is not None
    child = psutil.Process(int(parent.popen.stdout.readline()))
    assert child.is_running() and child.ppid() == parent.pid

    parent.popen.send_signal(sig)
    assert parent.popen.wait(10) == -sig

    _, alive = psutil.wait_procs([child], timeout=10)
    assert not alive, f"{child} survived its parent"
