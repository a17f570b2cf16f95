"""``reservations reset``: start from scratch. Removes what the local runs left in the data
directory (the SQLite database, the collector's traces and log lines); keeps ``.venv`` and
everything else."""

import contextlib
import fcntl
import os
from pathlib import Path

from rich.console import Console

from cli.errors import CliError
from cli.log_store import LOGS_FILE
from cli.settings import CliSettings
from cli.trace_files import LOCK_FILE, RUN_FILE, TRACES_FILE, running_collector
from devtools.addresses import LOCALHOST, port_is_free

SQLITE_FILES = ("reservations.db", "reservations.db-wal", "reservations.db-shm")
TRACE_FILES = (TRACES_FILE, "traces.tmp", LOGS_FILE, "logs.tmp", RUN_FILE, LOCK_FILE)
PROC = Path("/proc")


def reset(settings: CliSettings, console: Console) -> None:
    data_dir = settings.data_dir
    names = TRACE_FILES if settings.database_url else SQLITE_FILES + TRACE_FILES
    running = CliError(
        f"the system is running (a collector records into {data_dir}).",
        hint="stop `reservations run` / `demo` / `collector` first (Ctrl-C), then reset.",
    )
    if running_collector(data_dir) is not None:
        raise running
    if PROC.is_dir():
        holders = processes_holding([data_dir / name for name in names])
        if holders:
            pids = ", ".join(str(pid) for pid in holders)
            raise CliError(
                f"the system is running (pid {pids} has files of {data_dir} open).",
                hint="stop the services and `reservations run` / `demo` / `collector` first "
                "(Ctrl-C), then reset.",
            )
    elif not port_is_free(LOCALHOST, settings.api_port):
        # No /proc to ask (macOS): an API on the port may be using the database here.
        raise CliError(
            f"the API's port {settings.api_port} is taken: it may be using {data_dir}.",
            hint="stop the services and `reservations run` / `demo` first, then reset.",
        )
    with contextlib.ExitStack() as held:
        if (data_dir / LOCK_FILE).exists():
            # A collector holds it from its first step, before its mark: one starting now
            # must not lose its lock file (and a second collector find none to hold).
            lock = held.enter_context((data_dir / LOCK_FILE).open("a"))
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise running from None
        removed = [path for name in names if (path := data_dir / name).exists()]
        for path in removed:
            path.unlink()
    if data_dir.is_dir() and not any(data_dir.iterdir()):
        data_dir.rmdir()
    console.print(
        f"removed {', '.join(str(p) for p in removed)}" if removed else f"{data_dir} was clean",
        highlight=False,
    )
    if settings.database_url:
        console.print(
            "DATABASE_URL is set: that database was left as it is (drop its tables, or its "
            "DATABASE_SCHEMA, to start it over).",
            highlight=False,
        )
    else:
        console.print("next `reservations run` starts from the seed data (store/seed.json)")


def processes_holding(paths: list[Path]) -> list[int]:
    """The processes other than this one with one of ``paths`` open (Linux: ``/proc``). Those
    this user may not look into are not seen."""
    wanted = {str(path.resolve()) for path in paths if path.exists()}
    if not wanted:
        return []
    holders = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            opened = {os.readlink(fd) for fd in (entry / "fd").iterdir()}
        except OSError:  # gone since, or not ours to look into
            continue
        if opened & wanted:
            holders.append(int(entry.name))
    return sorted(holders)
