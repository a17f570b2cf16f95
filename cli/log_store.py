"""The embedded collector's log records, kept with their trace (bounded like the spans).

Only lines logged inside a span are kept: they are the ones a waterfall can show. The others
(start-up, shutdown) are counted and dropped. With ``store_dir`` each kept line is also
appended to ``store_dir/logs.jsonl`` so ``reservations trace`` can read it from another process.
"""

import json
import threading
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

from cli.log_records import LogLine
from cli.trace_files import (
    BoundedJsonLines,
    parsed_lines,
    read_records_of_trace,
    replace_with_lines,
)

LOGS_FILE = "logs.jsonl"
# A runaway loop logging inside one span must not fill the memory (or the file).
MAX_LINES_PER_TRACE = 500


class LogStore:
    """Thread-safe store of log lines grouped by trace id; the newest ``max_traces`` kept."""

    def __init__(self, max_traces: int = 500, store_dir: Path | None = None) -> None:
        self._max_traces = max_traces
        self._traces: OrderedDict[str, list[LogLine]] = OrderedDict()
        self._lock = threading.Lock()
        self._file = BoundedJsonLines(store_dir / LOGS_FILE) if store_dir is not None else None
        self.received = 0

    def add(self, lines: list[LogLine]) -> None:
        kept = []
        with self._lock:
            self.received += len(lines)
            for line in lines:
                if not line.trace_id:
                    continue
                trace = self._traces.setdefault(line.trace_id, [])
                if len(trace) < MAX_LINES_PER_TRACE:
                    trace.append(line)
                    kept.append(line)
                self._traces.move_to_end(line.trace_id)
            while len(self._traces) > self._max_traces:
                self._traces.popitem(last=False)
            if self._file is not None and kept:
                held = sum(map(len, self._traces.values()))
                self._file.append([_line(line) for line in kept], held, self._lines)

    def _lines(self) -> Iterator[str]:
        return (_line(line) for lines in self._traces.values() for line in lines)

    def trace(self, trace_id: str) -> list[LogLine]:
        with self._lock:
            return list(self._traces.get(trace_id, ()))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def _trace_id_and_line(line: str) -> tuple[str, str]:
    return str(json.loads(line)["trace_id"]), line


def _line(line: LogLine) -> str:
    return json.dumps(line.to_dict()) + "\n"


def read_trace_logs(store_dir: Path, trace_id: str) -> list[LogLine]:
    """One trace's lines from ``store_dir``."""
    return read_records_of_trace(store_dir / LOGS_FILE, trace_id, LogLine.from_dict)


def compact_logs_file(store_dir: Path, max_traces: int) -> None:
    """Keep only the lines of the newest ``max_traces`` traces on disk."""
    path = store_dir / LOGS_FILE
    traces: dict[str, list[str]] = {}
    for trace_id, line in parsed_lines(path, _trace_id_and_line):
        traces.setdefault(trace_id, []).append(line)
    if len(traces) <= max_traces:
        return
    replace_with_lines(
        path, (line for kept in list(traces.values())[-max_traces:] for line in kept)
    )
