"""A trace as a waterfall in the terminal: the span tree on the left, each span's bar on one
time axis shared by the whole trace, so the async hops and the gaps between them show."""

import math
from collections.abc import Iterator
from dataclasses import dataclass

from rich.console import Console, ConsoleOptions, RenderResult
from rich.text import Text

from cli.log_lines import by_span, log_rows
from cli.log_records import LogLine
from cli.spans import SpanRecord
from devtools.span_tree import walk

PALETTE = ("cyan", "magenta", "green", "yellow", "blue", "bright_cyan", "bright_magenta")
ERROR_STYLE = "bold red"
GAP = "  "
# Columns of the bar at least; on a narrow terminal, where the service column is cut too.
BAR_W, NARROW_BAR_W, NARROW_SERVICE_W = 20, 10, 12


@dataclass(frozen=True)
class Row:
    span: SpanRecord
    prefix: str  # tree guides before the name
    continuation: str  # tree guides for lines under the name (attributes)
    has_children: bool = False


def tree_rows(spans: list[SpanRecord]) -> list[Row]:
    """The span tree (:func:`devtools.span_tree.walk`) with its guides drawn."""
    rows: list[Row] = []
    for node in walk(spans):
        guides = "".join("   " if last else "│  " for last in node.lineage)
        if node.depth == 0:
            rows.append(Row(node.span, "", "", node.has_children))
            continue
        branch, below = ("└─ ", "   ") if node.last else ("├─ ", "│  ")
        rows.append(Row(node.span, guides + branch, guides + below, node.has_children))
    return rows


def format_duration(ns: int) -> str:
    ms = ns / 1e6
    if ms < 1:
        return f"{ms:.2f} ms"
    return f"{ms:.1f} ms" if ms < 1000 else f"{ms / 1000:.2f} s"


class Waterfall:
    """A rich renderable; it fits the console width it is printed on."""

    def __init__(
        self,
        spans: list[SpanRecord],
        show_attributes: bool = False,
        logs: list[LogLine] | None = None,
    ) -> None:
        self.spans = spans
        self.show_attributes = show_attributes
        self.logs = by_span(logs or [])
        self.rows = tree_rows(spans)
        services = dict.fromkeys(s.service for s in sorted(spans, key=lambda s: s.start_ns))
        self.colors = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(services)}

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if not self.spans:
            yield Text("(no spans)", "dim")
            return
        t0 = min(s.start_ns for s in self.spans)
        total = max(max(s.end_ns for s in self.spans) - t0, 1)
        yield Text.assemble(
            ("trace ", "dim"),
            (self.spans[0].trace_id, "bold"),
            (f" · {counted(len(self.spans), 'span')}", "dim"),
            (f" · {counted(len(self.colors), 'service')} · ", "dim"),
            (
                f"{counted(sum(map(len, self.logs.values())), 'log line')} · " if self.logs else "",
                "dim",
            ),
            (format_duration(total), "bold"),
        )
        service_w = max(len(s) for s in self.colors)
        kind_w = max(len(s.kind) for s in self.spans)
        dur_w = max(
            len("duration"), *(len(format_duration(s.end_ns - s.start_ns)) for s in self.spans)
        )
        needed = max(len(r.prefix) + len(r.span.name) for r in self.rows)
        room = options.max_width - kind_w - dur_w - 4 * len(GAP)
        bar_min = BAR_W
        if room - service_w - BAR_W < needed:
            # A narrow terminal: shorter service names and bar before the span names, which
            # an 80-column one cut to `└─ p…` (a new user's).
            service_w, bar_min = min(service_w, NARROW_SERVICE_W), NARROW_BAR_W
        available = room - service_w
        name_w = max(12, min(needed, available - bar_min))
        bar_w = max(NARROW_BAR_W, available - name_w)
        axis = Text("0", "dim")
        axis.append(format_duration(total).rjust(bar_w - 1), "dim")
        head = f"{'span':<{name_w}}{GAP}{'service':<{service_w}}{GAP}{'kind':<{kind_w}}{GAP}"
        yield Text.assemble((head + "duration".rjust(dur_w) + GAP, "dim"), axis)
        for row in self.rows:
            yield self._row(row, name_w, service_w, kind_w, dur_w, bar_w, t0, total)
            if self.show_attributes:
                yield from self._attributes(row, options.max_width)
            if lines := self.logs.get(row.span.span_id):
                guide = row.continuation + ("│  " if row.has_children else "   ")
                yield from log_rows(lines, guide, t0, options.max_width)
        errors = [s for s in self.spans if s.status == "ERROR"]
        for span in errors:
            yield Text.assemble(
                ("✗ ERROR ", ERROR_STYLE), f"{span.name} ({span.service}) ", span.status_message
            )

    def _row(
        self, row: Row, name_w: int, service_w: int, kind_w: int, dur_w: int, bar_w: int,
        t0: int, total: int,
    ) -> Text:  # fmt: skip
        span = row.span
        error = span.status == "ERROR"
        color = ERROR_STYLE if error else self.colors[span.service]
        label = row.prefix + span.name
        if len(label) > name_w:
            label = label[: name_w - 1] + "…"
        guides = min(len(row.prefix), len(label))
        start = int((span.start_ns - t0) / total * bar_w)
        end = min(bar_w, max(start + 1, math.ceil((span.end_ns - t0) / total * bar_w)))
        start = min(start, bar_w - 1)
        return Text.assemble(
            (label[:guides], "dim"),
            (label[guides:].ljust(name_w - guides), ERROR_STYLE if error else ""),
            GAP,
            (_cut(span.service, service_w).ljust(service_w), self.colors[span.service]),
            GAP,
            (span.kind.ljust(kind_w), "dim"),
            GAP,
            format_duration(span.end_ns - span.start_ns).rjust(dur_w),
            GAP,
            " " * start,
            ("█" * (end - start), color),
            " " * (bar_w - end),
        )

    def _attributes(self, row: Row, width: int) -> Iterator[Text]:
        lines = [f"{k} = {v}" for k, v in sorted(row.span.attributes.items())]
        if row.span.status_message:
            lines.append(f"status = {row.span.status} {row.span.status_message}")
        lines += [f"event {e.name} {e.attributes or ''}".rstrip() for e in row.span.events]
        for line in lines:
            guide = row.continuation + ("│  " if row.has_children else "   ")
            text = Text.assemble((guide + " ", "dim"), (line, "dim italic"))
            text.truncate(width, overflow="ellipsis")
            yield text


def counted(count: int, thing: str) -> str:
    """``1 span``, ``15 spans``."""
    return f"{count} {thing}{'' if count == 1 else 's'}"


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
