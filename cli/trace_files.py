"""The embedded collector's files: its traces (``traces.jsonl``, one span per line) and, through
:class:`BoundedJsonLines`, its log lines too (:mod:`cli.log_store`), read by ``reservations
trace`` from another process while ``reservations run`` appends to them."""

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from cli.spans import SpanRecord
from devtools.addresses import port_is_free

R = TypeVar("R")

TRACES_FILE = "traces.jsonl"


def read_traces_file(store_dir: Path) -> dict[str, list[SpanRecord]]:
    """Traces a collector in another process wrote to ``store_dir``, oldest first."""
    traces: dict[str, list[SpanRecord]] = {}
    for span in parsed_lines(store_dir / TRACES_FILE, _span):
        traces.setdefault(span.trace_id, []).append(span)
    return traces


def _span(line: str) -> SpanRecord:
    return SpanRecord.from_dict(json.loads(line))


def parsed_lines(
    path: Path, parse: Callable[[str], R], wanted: Callable[[str], bool] = bool
) -> list[R]:
    """``parse`` of each ``wanted`` line of a JSON-lines file (none if there is no file). A
    line that does not parse is skipped, with one warning for the file: a write cut short (a
    full disk, a crash) leaves half a line, and a file of records, one of them damaged, is
    still worth reading, where it stopped ``run``, ``collector`` and ``trace`` with a
    traceback (a review truncated one)."""
    if not path.exists():
        return []
    records, damaged = [], 0
    with path.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if not line.strip() or not wanted(line):
                continue
            try:
                records.append(parse(line))
            except (ValueError, KeyError, TypeError, AttributeError):
                damaged += 1
    if damaged:
        log.warning(
            "%s: skipped %d damaged line(s) (`reservations reset` starts afresh)", path, damaged
        )
    return records


def read_trace(store_dir: Path, trace_id: str) -> list[SpanRecord]:
    """One trace from ``store_dir``."""
    return read_records_of_trace(store_dir / TRACES_FILE, trace_id, SpanRecord.from_dict)


def read_records_of_trace(
    path: Path, trace_id: str, parse: Callable[[dict[str, Any]], R]
) -> list[R]:
    """The records of one trace in a JSON-lines file; parses only the lines that mention its
    id (the span and log files both hold one record per line with its ``trace_id``)."""
    needle = f'"trace_id": "{trace_id}"'
    return parsed_lines(path, lambda line: parse(json.loads(line)), lambda line: needle in line)


# A collector's file is rewritten from the store's memory once the records appended to it
# since it was last written whole outnumber those the store holds this many times over.
REWRITE_AFTER = 4
log = logging.getLogger(__name__)


class BoundedJsonLines:
    """A collector store's JSON-lines file (one record per line), appended to as records
    arrive. Once the records appended since it was last written whole outnumber those the
    store holds :data:`REWRITE_AFTER` times over, it is written again from what the store
    holds, its newest traces: a long run, a `reservations load` of 100,000 requests say, keeps
    it bounded, not only the next start (:func:`compact_traces_file`). A reader in another
    process sees the old file or the new one, never half of one (a rename). A rewrite that
    fails (a full disk) is a warning, and appending goes on."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._file = path.open("a", encoding="utf-8")
        if _ends_mid_line(path):
            self._file.write("\n")  # half a line, left by a write cut short: end it there
        # An earlier run's traces, compacted at the start, are not counted: `trace` still finds
        # them until the first rewrite, after this run's have outgrown memory four times over.
        self._appended = 0

    def append(self, lines: list[str], held: int, everything: Callable[[], Iterable[str]]) -> None:
        """Append ``lines`` (each ending in a newline); ``held`` is how many records the store
        holds now, ``everything`` gives them, as lines, if the file is to be rewritten."""
        self._file.writelines(lines)
        self._file.flush()
        self._appended += len(lines)
        if self._appended <= REWRITE_AFTER * max(held, 1):
            return
        self._appended = held
        try:
            replace_with_lines(self._path, everything())
        except OSError as error:
            log.warning("could not rewrite %s, appending to it as it is: %s", self._path, error)
            return
        self._file.close()
        self._file = self._path.open("a", encoding="utf-8")

    def close(self) -> None:
        self._file.close()


def _ends_mid_line(path: Path) -> bool:
    with path.open("rb") as file:
        if file.seek(0, os.SEEK_END) == 0:
            return False
        file.seek(-1, os.SEEK_END)
        return file.read(1) != b"\n"


def replace_with_lines(path: Path, lines: Iterable[str]) -> None:
    """Write ``lines`` to a new file beside ``path`` and rename it over ``path``: a reader sees
    the old file or the new one, never half of one; nothing is left behind if it fails."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.writelines(lines)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def span_line(span: SpanRecord) -> str:
    """A span as the traces file holds it: one JSON object and a newline."""
    return json.dumps(span.to_dict()) + "\n"


def compact_traces_file(store_dir: Path, max_traces: int) -> None:
    """Keep only the newest ``max_traces`` traces on disk, so the file does not grow forever."""
    traces = read_traces_file(store_dir)
    if len(traces) <= max_traces:
        return
    kept = list(traces.values())[-max_traces:]
    replace_with_lines(store_dir / TRACES_FILE, (span_line(s) for spans in kept for s in spans))


RUN_FILE = "collector.json"
# Held (flock) by the one collector recording into a data directory.
LOCK_FILE = "collector.lock"
RESERVATION_ROOT = "POST /reservations"
# What the API's SERVER span carries once the request is a reservation (api/routes).
RESERVATION_ID = "reservation.id"


def mark_collector_started(store_dir: Path, endpoint: str) -> None:
    """Note that a collector of this process records into ``store_dir`` from now on, so
    ``trace --last`` can tell this run's traces from an earlier run's."""
    store_dir.mkdir(parents=True, exist_ok=True)
    run = {"pid": os.getpid(), "started_ns": time.time_ns(), "endpoint": endpoint}
    (store_dir / RUN_FILE).write_text(json.dumps(run), encoding="utf-8")


def mark_collector_stopped(store_dir: Path) -> None:
    (store_dir / RUN_FILE).unlink(missing_ok=True)


def running_collector(store_dir: Path) -> dict[str, Any] | None:
    """The collector recording into ``store_dir`` now (``pid``, ``started_ns``, ``endpoint``),
    or None when none is: a mark left by a killed process does not count, nor one whose pid
    another process took since, with nothing listening on the endpoint."""
    try:
        run: dict[str, Any] = json.loads((store_dir / RUN_FILE).read_text(encoding="utf-8"))
        os.kill(int(run["pid"]), 0)
        endpoint = urlsplit(str(run["endpoint"]))
        if endpoint.port is None or port_is_free(endpoint.hostname or "127.0.0.1", endpoint.port):
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return run


def is_a_reservation(root: SpanRecord) -> bool:
    return root.name == RESERVATION_ROOT and RESERVATION_ID in root.attributes


def latest_reservation(store_dir: Path) -> tuple[str, int] | None:
    """The trace id and start (ns) of the newest reservation in ``store_dir``: the newest
    trace whose root span is a ``POST /reservations`` that became a reservation (it names
    one, ``reservation.id``: not a ``GET /users``, nor a request refused 415 or 422)."""
    starts: dict[str, int] = {}
    for trace_id, spans in read_traces_file(store_dir).items():
        ids = {span.span_id for span in spans}
        roots = [s for s in spans if s.parent_span_id not in ids]
        if any(is_a_reservation(root) for root in roots):
            starts[trace_id] = min(span.start_ns for span in spans)
    if not starts:
        return None
    newest = max(starts, key=lambda t: starts[t])
    return newest, starts[newest]
