"""Log lines under the span that wrote them, in a waterfall.

Each process exports its log records with the ids of the span that was current (see
:mod:`messaging.telemetry.otel_logs`); the embedded collector keeps them with their trace. Here they
are matched to their span by ``span_id`` and printed under it in time order: the offset from the
trace's start, the level and the line with its fields, so the waterfall reads like the interleaved
terminal logs, but sorted by the request they belong to.
"""

from collections.abc import Iterable, Iterator

from rich.text import Text

from cli.log_records import LogLine

LEVEL_STYLES = {"ERROR": "bold red", "FATAL": "bold red", "WARN": "yellow", "WARNING": "yellow"}
# Fields every line of this project repeats; the line's own fields are the interesting ones.
_QUIET = {"logger", "code.filepath", "code.function", "code.lineno"}


def by_span(lines: Iterable[LogLine]) -> dict[str, list[LogLine]]:
    """The lines grouped by the span that wrote them, each group in time order."""
    grouped: dict[str, list[LogLine]] = {}
    for line in sorted(lines, key=lambda line: line.time_ns):
        grouped.setdefault(line.span_id, []).append(line)
    return grouped


def format_offset(ns: int) -> str:
    ms = ns / 1e6
    return f"+{ms:.1f} ms" if abs(ms) < 1000 else f"+{ms / 1000:.2f} s"


def log_rows(lines: list[LogLine], guide: str, t0: int, width: int) -> Iterator[Text]:
    """One dim line per log record: tree guide, offset from ``t0``, level, message, fields."""
    for line in lines:
        level = (line.severity or "INFO").upper()
        fields = " ".join(f"{k}={v}" for k, v in sorted(line.attributes.items()) if k not in _QUIET)
        text = Text.assemble(
            (guide + "▸ ", "dim"),
            (format_offset(line.time_ns - t0).rjust(10) + " ", "dim"),
            (level.ljust(5), LEVEL_STYLES.get(level, "dim")),
            " ",
            (line.body, "italic"),
            (f"  {fields}" if fields else "", "dim"),
        )
        text.truncate(width, overflow="ellipsis")
        yield text
