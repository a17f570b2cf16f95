"""The `reservations` command as a real process, for the tests that drive it: one command to
its end (:func:`cli_once`), or `reservations run` kept running (:func:`start_cli`)."""

import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import httpx

from devtools.processes import Process
from tests.cli.conftest import RESERVATIONS, cli_env


def cli_once(
    *args: str, env: dict[str, str], cwd: Path | None = None, timeout: float = 30
) -> "subprocess.CompletedProcess[str]":
    return subprocess.run(
        [str(RESERVATIONS), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


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
        return cli_once(*args, env=self.env, timeout=timeout)

    def interrupt(self, within: float = 20) -> int:
        self.popen.send_signal(signal.SIGINT)
        return self.popen.wait(within)


def start_cli(amqp_url: str, tmp: Path, **extra: str) -> RunningCli:
    env = cli_env(
        amqp_url, tmp / ".data", DATABASE_URL=f"sqlite+aiosqlite:///{tmp}/cli.db", **extra
    )
    process = Process.start(
        "reservations run", [str(RESERVATIONS), "run"], env, log_path=tmp / "run.log", cwd=tmp
    )

    def ready() -> None:
        assert "Ctrl-C stops everything" in process.log()  # the CLI's own ready panel
        assert httpx.get(f"{env['API_URL']}/readyz", timeout=1).status_code == 200

    process.wait_ready(ready, within=60, retry_on=(AssertionError, httpx.HTTPError))
    return RunningCli(process, env)
