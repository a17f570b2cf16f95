"""`reservations run`'s supervisor with real child processes: a child that notifies is ready
once it sends READY=1 on its own NOTIFY_SOCKET (among other assignments, as systemd allows),
one that dies first never is, and the sockets are gone once everything stopped."""

import io
import os
import sys
from pathlib import Path

import psutil
from rich.console import Console

from cli.supervisor import Supervisor
from service.settings_check import CONFIGURATION
from service.startup import PREFIX
from tests.waiting import eventually

NOTIFY = (
    "import os, socket, time\n"
    "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
    "s.sendto(b'STATUS=starting', os.environ['NOTIFY_SOCKET'])\n"
    "time.sleep(0.3)\n"
    "s.sendto(b'STATUS=consuming\\nREADY=1', os.environ['NOTIFY_SOCKET'])\n"
    "time.sleep(60)\n"
)


def test_ready_once_it_says_so_and_the_sockets_go_with_the_stop() -> None:
    supervisor = Supervisor(Console(file=io.StringIO()), stop_timeout=5)
    env = dict(os.environ)
    try:
        worker = supervisor.start(
            "worker", [sys.executable, "-c", NOTIFY], env, "green", notifies=True
        )
        quiet = supervisor.start(
            "quiet", [sys.executable, "-c", "import time; time.sleep(60)"], env, "red"
        )
        for attempt in eventually(10, every=0.05):
            with attempt:
                assert worker.ready.is_set()
        address = Path(psutil.Process(worker.process.popen.pid).environ()["NOTIFY_SOCKET"])
        assert address.exists() and address.name == "worker.sock"
        assert "NOTIFY_SOCKET" not in psutil.Process(quiet.process.popen.pid).environ()
        assert not quiet.ready.is_set()
    finally:
        supervisor.stop()
    assert not address.parent.exists()


def test_a_child_that_dies_before_it_is_ready_never_is() -> None:
    supervisor = Supervisor(Console(file=io.StringIO()), stop_timeout=5)
    try:
        child = supervisor.start(
            "early", [sys.executable, "-c", "raise SystemExit(3)"], dict(os.environ), "red",
            notifies=True,
        )  # fmt: skip
        for attempt in eventually(10, every=0.05):
            with attempt:
                assert supervisor.died() is child
        assert not child.ready.is_set()
    finally:
        supervisor.stop()


def test_a_child_that_refuses_a_setting_is_reported_by_its_own_line() -> None:
    """A service's settings line ends in the Configuration section, not Troubleshooting: the
    supervisor missed it and said only `exited (exit code 1)`."""
    line = f"{PREFIX}invalid setting LOG_LEVEL: Input should be 'DEBUG' (see {CONFIGURATION})"
    supervisor = Supervisor(Console(file=io.StringIO()), stop_timeout=5)
    try:
        child = supervisor.start(
            "worker",
            [sys.executable, "-c", f"import sys; sys.stderr.write({line!r} + '\\n'); sys.exit(1)"],
            dict(os.environ),
            "red",
        )
        for attempt in eventually(10, every=0.05):
            with attempt:
                assert supervisor.died() is child
        assert child.why_it_died() == (
            "worker cannot start: invalid setting LOG_LEVEL: Input should be 'DEBUG'"
        )
    finally:
        supervisor.stop()
