"""Child processes run side by side, their logs interleaved on one terminal, stopped together.

Children run in their own session, so a Ctrl-C in the terminal reaches only this process; it
then stops them in order (the API first, so in-flight requests still get their replies), each
with SIGTERM and a bounded wait before SIGKILL. A second Ctrl-C kills at once. SIGTERM and
SIGHUP (the terminal closed) stop them the same way; if this process is killed outright, the
kernel kills them (:mod:`devtools.parent_death`), so no child outlives it.

A child started with ``notifies=True`` is ready when it says so by systemd's notification
protocol (:mod:`service.notify`): it gets ``NOTIFY_SOCKET``, a Unix datagram socket of its own
that this process reads, not a log line that ``LOG_LEVEL`` may hide.
"""

import re
import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from rich.console import Console
from rich.text import Text

from cli.errors import CliError
from devtools.processes import Process
from service.notify import NOTIFY_SOCKET, READY
from service.settings_check import CONFIGURATION
from service.startup import PREFIX, TROUBLESHOOTING

# A service's own one-line start-up failure (service/startup.py, or a setting it refused:
# service/settings_check.py), without the log decoration.
FAILURE = re.compile(
    rf"{re.escape(PREFIX)}(.*?)\s*"
    rf"\(see (?:{re.escape(TROUBLESHOOTING)}|{re.escape(CONFIGURATION)})\)"
)


@dataclass
class Child:
    process: Process
    color: str
    notifies: bool  # ready once it sends READY=1; else no readiness of its own to wait for
    ready: threading.Event = field(default_factory=threading.Event)
    pump: threading.Thread | None = None
    failure: str | None = None  # the line in which it said why it cannot start

    @property
    def name(self) -> str:
        return self.process.name

    def why_it_died(self) -> str:
        """``name`` and its own reason, or its exit code when it gave none."""
        if self.pump is not None:
            self.pump.join(timeout=2)  # its last lines may still be in the pipe
        if self.failure:
            return f"{self.name} cannot start: {self.failure}"
        return f"{self.name} exited (exit code {self.process.returncode})"


class Supervisor:
    def __init__(self, console: Console, stop_timeout: float = 10.0) -> None:
        self.console = console
        self.children: list[Child] = []
        self.stop_requested = threading.Event()
        self._hurry = threading.Event()
        self._stop_timeout = stop_timeout
        self._stopping = False
        self._print_lock = threading.Lock()
        self._width = 0
        self._socket_dir: Path | None = None  # the children's notification sockets

    def install_signal_handlers(self) -> None:
        """SIGINT, SIGTERM and SIGHUP ask for a clean stop; a second Ctrl-C (SIGINT) asks to
        hurry, as uvicorn's does. A second SIGTERM or SIGHUP is the same stop delivered again,
        not a hurry: ``make`` passes the SIGTERM it gets on to the CLI, while ``timeout`` or
        a service manager signals the whole process group, so ``timeout 60 make demo`` sent
        two, and the CLI killed every child mid-stop."""

        def handle(signum: int, frame: FrameType | None) -> None:
            if self.stop_requested.is_set() and signum == signal.SIGINT:
                self._hurry.set()
            self.stop_requested.set()

        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, handle)

    def start(
        self,
        name: str,
        args: Sequence[str],
        env: Mapping[str, str],
        color: str,
        *,
        notifies: bool = False,
    ) -> Child:
        """Start ``args``; with ``notifies``, its child counts as ready once it sends
        ``READY=1`` to the ``NOTIFY_SOCKET`` it is given."""
        listening = self._notification_socket(name) if notifies else None
        if listening is not None:
            env = {**env, NOTIFY_SOCKET: listening.getsockname()}
        try:
            process = Process.start(name, args, env, own_session=True)
        except BaseException:
            if listening is not None:
                listening.close()
            raise
        child = Child(process, color, notifies)
        self._width = max(self._width, len(name))
        child.pump = threading.Thread(target=self._pump, args=(child,), daemon=True)
        child.pump.start()
        if listening is not None:
            threading.Thread(target=self._listen, args=(child, listening), daemon=True).start()
        self.children.append(child)
        return child

    def _notification_socket(self, name: str) -> socket.socket:
        """A Unix datagram socket for ``name`` to say it is ready on, in a directory of this
        process's own (mode 0700: no other user can send to it), removed by :meth:`stop`."""
        if self._socket_dir is None:
            self._socket_dir = Path(tempfile.mkdtemp(prefix="reservations-"))
        address = self._socket_dir / f"{name}.sock"
        listening = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            listening.bind(str(address))
        except OSError as error:  # a TMPDIR too long for a socket's address, say
            listening.close()
            raise CliError(
                f"cannot make a socket for {name} to say it is ready at {address} ({error})",
                hint="set TMPDIR to a short directory, such as /tmp",
            ) from None
        return listening

    def _listen(self, child: Child, listening: socket.socket) -> None:
        """Until ``child`` says it is ready, exits, or everything stops."""
        with listening:
            listening.settimeout(0.2)
            while not self._stopping:
                try:
                    said = listening.recv(4096)
                except TimeoutError:
                    if not child.process.running:  # what it sent before it died was read
                        return
                    continue
                except OSError:
                    return
                if READY in said.split(b"\n"):
                    child.ready.set()
                    return

    def _pump(self, child: Child) -> None:
        assert child.process.popen.stdout is not None
        for raw in child.process.popen.stdout:
            line = raw.decode(errors="replace").rstrip()
            if child.failure is None and (failed := FAILURE.search(line)):
                child.failure = failed[1]
            self.say(Text.assemble((f"{child.name:<{self._width}} │ ", child.color), line))

    def say(self, text: Text | str) -> None:
        with self._print_lock:
            self.console.print(text, soft_wrap=True, highlight=False)

    def died(self) -> Child | None:
        """A child that exited while nobody asked it to."""
        if self._stopping:
            return None
        return next((c for c in self.children if not c.process.running), None)

    def wait(self) -> Child | None:
        """Block until a stop is requested (returns None) or a child dies (returns it)."""
        while not self.stop_requested.wait(0.2):
            if (dead := self.died()) is not None:
                return dead
        return None

    def stop(self) -> dict[str, int]:
        """Stop every child, newest first; returns each one's exit code."""
        self._stopping = True
        codes: dict[str, int] = {}
        for child in reversed(self.children):
            if not child.process.terminate(self._stop_timeout, self._hurry):
                said = (
                    f"killing {child.name}, as a second Ctrl-C asks"
                    if self._hurry.is_set()
                    else f"{child.name} did not stop in time: killing it"
                )
                self.say(Text(said, "yellow"))
            codes[child.name] = child.process.kill()
            if child.pump is not None:
                child.pump.join(timeout=2)
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
        return codes
