"""The waterfall, on a trace recorded from a real run of the system."""

import dataclasses
import random

from rich.console import Console
from rich.segment import Segment

from cli.spans import SpanRecord
from cli.waterfall import Waterfall, tree_rows

API, CREDIT_CHECK, FULFILMENT = "reservations-api", "credit-check-worker", "fulfilment-worker"
REQUEST_PROCESS = "process reservations:reservation.requested:credit-check"
CONFIRMED_PROCESS = "process reservations:reservation.confirmed:fulfilment"


def render(spans: list[SpanRecord], width: int = 160, attrs: bool = False) -> tuple[str, Console]:
    console = Console(record=True, width=width, color_system="truecolor", force_terminal=True)
    console.print(Waterfall(spans, show_attributes=attrs))
    return console.export_text(clear=False), console


def span_lines(text: str) -> list[str]:
    return text.splitlines()[2:]  # after the title and the axis


def named(spans: list[SpanRecord], name: str, service: str) -> SpanRecord:
    return next(s for s in spans if s.name == name and s.service == service)


def test_title_and_axis_describe_the_whole_trace(confirmed_trace: list[SpanRecord]) -> None:
    text, _ = render(confirmed_trace)
    title, axis = text.splitlines()[:2]
    assert title == f"trace {confirmed_trace[0].trace_id} · 18 spans · 3 services · 33.0 ms"
    assert axis.split()[:5] == ["span", "service", "kind", "duration", "0"]
    assert axis.rstrip().endswith("33.0 ms")
    assert len(span_lines(text)) == len(confirmed_trace)


def test_one_line_per_span_with_service_kind_and_duration(
    confirmed_trace: list[SpanRecord],
) -> None:
    text, _ = render(confirmed_trace)
    first = span_lines(text)[0]
    assert first.split()[:6] == ["POST", "/reservations", API, "SERVER", "21.6", "ms"]
    for line in span_lines(text):
        assert any(service in line for service in (API, CREDIT_CHECK, FULFILMENT)), line


def test_nesting_follows_parent_ids_across_the_broker(confirmed_trace: list[SpanRecord]) -> None:
    depth = {r.span.name: len(r.prefix) // 3 for r in tree_rows(confirmed_trace)}
    assert depth["POST /reservations"] == 0
    assert depth["publish reservations:reservation.requested"] == 1
    assert depth[REQUEST_PROCESS] == 2  # the worker's CONSUMER under the API's PRODUCER
    assert depth["publish reservations:reservation.confirmed"] == 3
    assert depth[CONFIRMED_PROCESS] == 4
    assert depth["prepare download"] == 5
    text, _ = render(confirmed_trace)
    lines = span_lines(text)
    assert lines[0].startswith("POST /reservations")
    assert lines[1].startswith("└─ publish reservations:reservation.requested")
    assert lines[2].startswith("   └─ " + REQUEST_PROCESS)
    reply = next(line for line in lines if "process amq.rabbitmq.reply-to" in line)
    assert reply.startswith("      │  └─ process amq.rabbitmq.reply-to")  # more siblings follow


def test_children_are_ordered_by_start_time_whatever_the_input_order(
    confirmed_trace: list[SpanRecord],
) -> None:
    rows = tree_rows(confirmed_trace)
    consumer = named(confirmed_trace, REQUEST_PROCESS, CREDIT_CHECK)
    kids = [r.span for r in rows if r.span.parent_span_id == consumer.span_id]
    assert len(kids) == 6
    assert [k.start_ns for k in kids] == sorted(k.start_ns for k in kids)
    assert kids[-1].name == "publish reservations:reservation.confirmed"
    shuffled = confirmed_trace[:]
    random.Random(7).shuffle(shuffled)
    assert render(shuffled)[0] == render(confirmed_trace)[0]


def test_bars_share_one_time_axis(confirmed_trace: list[SpanRecord]) -> None:
    text, _ = render(confirmed_trace)
    lines = span_lines(text)
    axis_start = text.splitlines()[1].index(" 0 ") + 1

    def bar(line: str) -> tuple[int, int]:
        cells = line[axis_start:]
        return cells.index("█"), len(cells.rstrip())

    root_start, root_end = bar(lines[0])
    tail_start, tail_end = bar(next(line for line in lines if CONFIRMED_PROCESS in line))
    assert root_start == 0
    assert tail_start > root_start and tail_end > root_end  # the async tail outlives the request


def test_a_span_whose_parent_is_missing_is_rendered_as_a_root(
    confirmed_trace: list[SpanRecord],
) -> None:
    without_server = [s for s in confirmed_trace if s.name != "POST /reservations"]
    text, _ = render(without_server)
    lines = span_lines(text)
    assert lines[0].startswith("publish reservations:reservation.requested")
    assert lines[1].startswith("└─ " + REQUEST_PROCESS)
    assert len(lines) == 17


def test_an_error_span_is_red_and_listed(confirmed_trace: list[SpanRecord]) -> None:
    failing = named(confirmed_trace, CONFIRMED_PROCESS, FULFILMENT)
    spans = [
        dataclasses.replace(s, status="ERROR", status_message="disk full") if s == failing else s
        for s in confirmed_trace
    ]
    text, _ = render(spans)
    red = [s for s in segments(spans) if _is_red(s)]
    assert any(CONFIRMED_PROCESS in s.text for s in red)  # the name
    assert any("█" in s.text for s in red)  # and its bar
    assert not any("prepare download" in s.text for s in red)  # only that span
    assert text.splitlines()[-1] == f"✗ ERROR {CONFIRMED_PROCESS} ({FULFILMENT}) disk full"
    assert "ERROR" not in render(confirmed_trace)[0]
    assert not [s for s in segments(confirmed_trace) if _is_red(s)]


def segments(spans: list[SpanRecord]) -> list[Segment]:
    console = Console(width=160, color_system="truecolor", force_terminal=True)
    return list(console.render(Waterfall(spans)))


def _is_red(segment: Segment) -> bool:
    color = segment.style.color if segment.style else None
    return color is not None and color.name == "red"


def test_attributes_are_shown_under_their_span_on_request(
    confirmed_trace: list[SpanRecord],
) -> None:
    text, _ = render(confirmed_trace, attrs=True)
    lines = text.splitlines()
    server = lines.index(next(line for line in lines if line.startswith("POST /reservations")))
    assert lines[server + 1].strip() == "│   http.flavor = 1.1"
    assert "│   reservation.outcome = confirmed" in text
    assert "messaging.rabbitmq.destination.routing_key = reservation.requested" in text
    assert "http.flavor" not in render(confirmed_trace)[0]


def test_narrow_terminals_truncate_names_but_keep_every_column(
    confirmed_trace: list[SpanRecord],
) -> None:
    text, _ = render(confirmed_trace, width=100)
    lines = span_lines(text)
    assert all(len(line) <= 100 for line in lines)
    assert any("…" in line for line in lines)
    assert all("█" in line for line in lines)


def test_an_80_column_terminal_keeps_the_span_names_readable(
    confirmed_trace: list[SpanRecord],
) -> None:
    """At 80 columns the names were cut to `└─ p…`: the service column and the bar give way
    first."""
    text, _ = render(confirmed_trace, width=80)
    rows = span_lines(text)
    assert all(len(line) <= 80 for line in text.splitlines()), text
    assert any("prepare download" in row for row in rows), text
    assert any("└─ publish reservations:reservati" in row for row in rows), text
    assert any("credit-chec…" in row for row in rows), text
