"""Log lines under the span that wrote them, on a trace and its log records recorded together
from a real `reservations demo` (16 spans, 6 log lines, three services)."""

import json

import pytest
from rich.console import Console

from cli.log_records import LogLine
from cli.spans import SpanRecord
from cli.waterfall import Waterfall
from tests.cli.conftest import FIXTURES

REQUEST_PROCESS = "process reservations:reservation.requested:credit-check"
CONFIRMED_PROCESS = "process reservations:reservation.confirmed:fulfilment"
LOG_MARK = "▸"


@pytest.fixture
def logged_trace() -> tuple[list[SpanRecord], list[LogLine]]:
    data = json.loads((FIXTURES / "logged_trace.json").read_text())
    return [SpanRecord.from_dict(s) for s in data["spans"]], [
        LogLine.from_dict(line) for line in data["logs"]
    ]


def render(spans: list[SpanRecord], logs: list[LogLine] | None) -> list[str]:
    console = Console(record=True, width=200, color_system=None)
    console.print(Waterfall(spans, logs=logs))
    return console.export_text().splitlines()


def lines_under(text: list[str], span_name: str) -> list[str]:
    """The log lines printed right under the row of ``span_name``."""
    start = next(i for i, line in enumerate(text) if span_name in line and "█" in line)
    found = []
    for line in text[start + 1 :]:
        if LOG_MARK not in line:
            break
        found.append(line)
    return found


def test_each_line_is_under_the_span_that_wrote_it_in_time_order(
    logged_trace: tuple[list[SpanRecord], list[LogLine]],
) -> None:
    spans, logs = logged_trace
    text = render(spans, logs)
    assert "16 spans · 3 services · 6 log lines · " in text[0]
    credit = lines_under(text, REQUEST_PROCESS)
    bodies = [line.split("INFO  ", 1)[1].split("  ")[0] for line in credit]
    assert bodies == ["reservation received", "credit checked", "replied", "published"]
    assert "outcome=confirmed" in credit[1] and "credits_left=90" in credit[1]
    offsets = [float(line.split("+", 1)[1].split()[0]) for line in credit]
    assert offsets == sorted(offsets)
    (fulfilment,) = lines_under(text, CONFIRMED_PROCESS)
    assert "INFO  download ready" in fulfilment and "item_id=book-1" in fulfilment
    (access,) = lines_under(text, "POST /reservations")
    assert '"POST /reservations HTTP/1.1" 201' in access
    assert sum(LOG_MARK in line for line in text) == len(logs)
    # The guide under a span with children keeps the tree's vertical line.
    assert credit[0].lstrip().startswith("│  ▸")


def test_levels_are_shown_and_no_lines_without_logs(
    logged_trace: tuple[list[SpanRecord], list[LogLine]],
) -> None:
    spans, logs = logged_trace
    warned = [logs[0].__class__(**{**logs[0].to_dict(), "severity": "WARN", "body": "slow"})]
    text = render(spans, warned)
    assert any("WARN  slow" in line for line in text)
    plain = render(spans, None)
    assert not any(LOG_MARK in line for line in plain) and "log lines" not in plain[0]
