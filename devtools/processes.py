"""One wrapper for every child process the dev tools start: the services, the benchmark's
helpers, the CLI's children.

Start with an environment (stdout to a log file or a pipe), wait until it is ready while
noticing that it died, stop it with SIGTERM and a bounded wait, then SIGKILL.
"""

import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tenacity import Retrying, retry_if_result, stop_after_delay, stop_when_event_set, wait_fixed

from devtools.parent_death import dying_with_parent
from devtools.waiting import Retried, eventually

# uvicorn re-raises SIGTERM after its graceful shutdown: -SIGTERM is a clean exit too.
CLEAN_EXIT_CODES = (0, -signal.SIGTERM)
LOG_TAIL = 4000


class ProcessExited(RuntimeError):
    """The process ended while it was expected to run (not retried by the waits)."""


def python_module(module: str, *args: str) -> list[str]:
    """``python -m module args`` with this interpreter."""
    return [sys.executable, "-m", module, *args]


@dataclass
class Process:
    name: str
    popen: "subprocess.Popen[bytes]"
    log_path: Path | None = None

    @classmethod
    def start(
        cls,
        name: str,
        args: Sequence[str],
        env: Mapping[str, str],
        *,
        log_path: Path | None = None,
        cwd: Path | None = None,
        pipe_stdout: bool = False,
        stdin: bool = False,
        own_session: bool = False,
    ) -> "Process":
        """Start ``args``. With ``log_path``, stderr (and stdout unless ``pipe_stdout``) go to
        that file; without, stdout and stderr go to one pipe. ``own_session`` keeps a Ctrl-C in
        the terminal away from the child. The child is killed if this process dies without
        stopping it (:mod:`devtools.parent_death`)."""
        log: IO[bytes] | None = log_path.open("wb") if log_path is not None else None
        try:
            popen = subprocess.Popen(
                dying_with_parent(args),
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE if pipe_stdout or log is None else log,
                stderr=log if log is not None else subprocess.STDOUT,
                start_new_session=own_session,
            )
        finally:
            if log is not None:
                log.close()
        return cls(name, popen, log_path)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def running(self) -> bool:
        return self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode

    def log(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def log_offset(self) -> int:
        """Where the log ends now; :meth:`log_since` reads what comes after."""
        return self.log_path.stat().st_size if self.log_path and self.log_path.exists() else 0

    def log_since(self, offset: int) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")

    def check_running(self) -> None:
        """Raise :class:`ProcessExited` (with the log's tail) if the process has ended."""
        if not self.running:
            raise ProcessExited(
                f"{self.name} exited (exit code {self.returncode}):\n{self.log()[-LOG_TAIL:]}"
            )

    def wait_ready(
        self,
        check: Callable[[], object],
        within: float,
        every: float = 0.2,
        retry_on: Retried = AssertionError,
    ) -> None:
        """Until ``check()`` stops raising ``retry_on``; fails at once if the process dies."""
        for attempt in eventually(within, every=every, retry_on=retry_on):
            with attempt:
                self.check_running()
                check()

    def wait_for_log(self, text: str, within: float = 20) -> None:
        def logged() -> None:
            assert text in self.log(), f"{self.name} has not logged {text!r} yet"

        self.wait_ready(logged, within, every=0.1)

    def wait_exit(self, within: float = 15) -> int:
        """Wait for the process to exit by itself; returns its exit code."""
        try:
            return self.popen.wait(within)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} still running after {within}s") from None

    def stop(self, within: float = 15, hurry: threading.Event | None = None) -> int:
        """:meth:`terminate`, then SIGKILL if that did not work. Returns the exit code."""
        if not self.terminate(within, hurry):
            self.popen.kill()
        return self.popen.wait()

    def terminate(self, within: float = 15, hurry: threading.Event | None = None) -> bool:
        """SIGTERM and wait up to ``within`` seconds (less once ``hurry`` is set); True if the
        process has exited."""
        if self.running:
            self.popen.send_signal(signal.SIGTERM)
            self._wait_exit_until(within, hurry or threading.Event())
        return not self.running

    def kill(self) -> int:
        if self.running:
            self.popen.kill()
        return self.popen.wait()

    def _wait_exit_until(self, within: float, hurry: threading.Event) -> None:
        Retrying(
            stop=stop_after_delay(within) | stop_when_event_set(hurry),
            wait=wait_fixed(0.05),
            retry=retry_if_result(bool),
            retry_error_callback=lambda state: None,
        )(lambda: self.running)
