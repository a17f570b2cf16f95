"""``reservations trace --last``: the newest *reservation's* trace (not a ``GET /users``), and a
clear word when it is old or was recorded by an earlier run rather than the one going on now."""

import time
from dataclasses import dataclass
from pathlib import Path

from cli.errors import CliError
from cli.invocation import command
from cli.trace_files import TRACES_FILE, latest_reservation, running_collector
from cli.trace_lookup import LATE_SPANS

OLD_AFTER_S = 600


@dataclass(frozen=True)
class LastReservation:
    trace_id: str
    note: str
    stale: bool  # old, or not from the collector recording now


def last_reservation(data_dir: Path, now_ns: int | None = None) -> LastReservation:
    path = data_dir / TRACES_FILE
    found = latest_reservation(data_dir)
    if found is None:
        if running_collector(data_dir) is not None:
            hint = f"a collector records there now: send `{command()} reserve alice book-1`"
        else:
            hint = (
                f"start `{command()} run` (or `{command()} collector` beside services run by "
                f"hand) and send `{command()} reserve alice book-1`"
            )
        raise CliError(f"no reservation's trace in {path} yet.", hint=f"{hint}; {LATE_SPANS}.")
    trace_id, started_ns = found
    age_s = ((now_ns or time.time_ns()) - started_ns) / 1e9
    age = f"{_duration(age_s)} ago"
    run = running_collector(data_dir)
    if run is None:
        return LastReservation(
            trace_id,
            f"the last reservation recorded in {path}, {age}; no collector is recording there "
            f"now (`{command()} run` or `{command()} collector` starts one).",
            stale=True,
        )
    if started_ns < run["started_ns"]:
        return LastReservation(
            trace_id,
            f"the last reservation in {path} is from an earlier run ({age}): none was "
            "recorded since the collector running now started.",
            stale=True,
        )
    stale = age_s > OLD_AFTER_S
    return LastReservation(trace_id, f"the last reservation, {age}.", stale)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{max(seconds, 0):.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"
