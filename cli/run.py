"""``reservations run``: everything up until Ctrl-C, and a clear word when something dies."""

import signal
from collections.abc import Callable

from rich.console import Console
from rich.panel import Panel

from cli.errors import CliError
from cli.invocation import command
from cli.settings import CliSettings
from cli.system import Interrupted, LocalSystem, local_system


def run(
    settings: CliSettings,
    console: Console,
    first: Callable[[LocalSystem], None] | None = None,
    exit_after: bool = False,
) -> None:
    """Start everything, do ``first`` once it is ready, then keep running unless
    ``exit_after``; whatever happens, stop every process."""
    try:
        with local_system(settings, console) as system:
            if first is not None:
                first(system)
            if not exit_after:
                announce_ready(system, console)
                keep_running(system)
    except Interrupted:
        pass
    console.print("[green]stopped[/]: every process exited")


def announce_ready(system: LocalSystem, console: Console) -> None:
    cli = command()
    traces = (
        f"{cli} trace --last  [dim](the newest reservation's trace)[/]"
        if system.receiver is not None
        else f"traces go to {system.otlp_endpoint}"
    )
    console.print(
        Panel.fit(
            f"API      [bold]{system.api_url}[/]\n"
            f"try      {cli} reserve alice book-1\n"
            f"         {cli} users\n"
            f"         {traces}\n"
            f"[dim]Ctrl-C stops everything[/]",
            title="[green]ready[/]",
        )
    )


def keep_running(system: LocalSystem) -> None:
    """Until Ctrl-C/SIGTERM; a child that dies on its own ends the run with an error."""
    dead = system.supervisor.wait()
    if dead is not None:
        code = dead.process.returncode
        raise CliError(
            f"{dead.name} exited unexpectedly (exit code {code}); stopped everything else.",
            hint=why_killed(code) or f"its last log lines above (prefixed '{dead.name}') say why.",
        )


# Signals a process gets from another one, asking it to stop: its log cannot say why.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def why_killed(code: int | None) -> str | None:
    """For a child ended by a signal (a negative exit code), what that says; else None."""
    if code is None or code >= 0:
        return None
    try:
        name = signal.Signals(-code).name
    except ValueError:  # a real-time signal has no name of its own
        name = f"signal {-code}"
    if -code in STOP_SIGNALS:
        return (
            f"it was stopped by {name}, sent by another process (not this one): its log "
            "cannot say why."
        )
    if -code == signal.SIGKILL:
        return "it was killed by SIGKILL: the kernel's out-of-memory killer, or a `kill -9`."
    return f"it ended on {name}: a crash; its last log lines above may say more."
