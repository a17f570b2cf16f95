"""The load command's safety limits and its statistics."""

import pytest
from rich.console import Console

from cli.errors import CliError
from cli.load import check_limits, summary
from devtools.load_stats import summarize


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8081", "http://localhost:8081", "http://[::1]:8081"]
)
def test_loopback_apis_are_allowed(url: str) -> None:
    check_limits(url, 10, 2)


@pytest.mark.parametrize("url", ["http://10.0.0.1:8081", "https://api.example.com"])
def test_other_apis_are_refused(url: str) -> None:
    with pytest.raises(CliError, match="only a loopback API"):
        check_limits(url, 10, 2)


@pytest.mark.parametrize(("n", "c"), [(0, 1), (10, 0), (1_000_000, 1), (10, 10_000)])
def test_request_count_and_concurrency_are_bounded(n: int, c: int) -> None:
    with pytest.raises(CliError, match="-n must be"):
        check_limits("http://127.0.0.1:8081", n, c)


def test_the_summary_shows_outcomes_throughput_and_latencies() -> None:
    result = summarize(
        [10_000_000, 20_000_000, 30_000_000, 40_000_000],
        errors=0,
        elapsed_s=2.0,
        statuses={"201 confirmed": 3, "409 rejected_insufficient_credits": 1},
    )
    console = Console(record=True, width=100)
    console.print(summary(result, concurrency=2))
    text = console.export_text()
    assert "4 reservations, concurrency 2" in text
    assert "201 confirmed" in text and "409 rejected_insufficient_credits" in text
    assert "2.0 req/s" in text
    assert "p50 latency" in text and "20.0 ms" in text
    assert "p99 latency" in text and "40.0 ms" in text
