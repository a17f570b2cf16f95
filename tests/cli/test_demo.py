"""`make demo` without a terminal: `reservations demo` with DEMO_EXIT=1 (what CI runs)."""

import asyncio
import re
import sqlite3
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.cli.conftest import RESERVATIONS, cli_env
from tests.system import purge_work_queues
from tests.traces import CONFIRMED_PROCESS, REQUEST_PROCESS

pytestmark = pytest.mark.e2e


def test_demo_prints_the_whole_trace_and_exits(amqp_url: str, tmp_path: Path) -> None:
    asyncio.run(purge_work_queues(amqp_url))
    env = cli_env(amqp_url, tmp_path / ".data", DEMO_EXIT="1")
    env.pop("DATABASE_URL", None)  # the demo's own default: a SQLite file in the data dir
    # With a trailing slash, as a user may write it: the readiness check asked for //readyz
    # (a 404) and the demo waited 60 s, then failed (a new user's).
    env["API_URL"] += "/"

    done = subprocess.run(
        [str(RESERVATIONS), "demo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    out = done.stdout
    assert "confirmed HTTP 201  alice → book-1" in out
    assert "rejected_insufficient_credits HTTP 409  bob → course-1" in out
    waterfall = out[out.index("the confirmed reservation's trace") :].splitlines()[1:]
    trace_id = re.search(r"trace id\s+([0-9a-f]{32})", out)
    assert trace_id and waterfall[0].startswith(f"trace {trace_id[1]} · ")
    assert "3 services" in waterfall[0]
    rows = [line for line in waterfall if "█" in line]
    assert rows[0].startswith("POST /reservations")
    for service in ("reservations-api", "credit-check-worker", "fulfilment-worker"):
        assert any(service in row for row in rows), "\n".join(waterfall)
    assert any("process reservations:reservation.confirmed:fulfilment" in r for r in rows)
    # Log lines under the span that wrote them.
    assert "INFO  credit checked" in " ".join(_logged_under(waterfall, REQUEST_PROCESS))
    assert "INFO  download ready" in " ".join(_logged_under(waterfall, CONFIRMED_PROCESS))
    assert out.rstrip().endswith("stopped: every process exited")
    assert (tmp_path / ".data" / "reservations.db").exists()
    assert (tmp_path / ".data" / "traces.jsonl").exists()
    # Spans, log records and metrics all go to the embedded collector, and it takes them all.
    assert "Failed to export" not in out + done.stderr, out[-3000:] + done.stderr
    with pytest.raises(httpx.ConnectError):  # the API is gone, not orphaned
        httpx.get(f"{env['API_URL']}/healthz", timeout=2)

    # `reservations trace ID` reads the lines from the collector's file, unless --no-logs.
    for flag, shown in (("--logs", True), ("--no-logs", False)):
        shown_trace = subprocess.run(
            [str(RESERVATIONS), "trace", trace_id[1], "--source", "collector", flag],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert shown_trace.returncode == 0, shown_trace.stderr
        lines = shown_trace.stdout.splitlines()
        under = " ".join(_logged_under(lines, REQUEST_PROCESS))
        assert ("INFO  credit checked" in under) is shown, shown_trace.stdout


def test_a_demo_with_tracing_turned_off_says_why_instead_of_waiting(
    amqp_url: str, tmp_path: Path
) -> None:
    """OTEL_SDK_DISABLED=true in the user's shell reaches the services: the API answers with
    no trace id, and the demo says why, rather than wait out TRACE_WITHIN for spans."""
    asyncio.run(purge_work_queues(amqp_url))
    env = cli_env(amqp_url, tmp_path / ".data", DEMO_EXIT="1", OTEL_SDK_DISABLED="true")
    done = subprocess.run(
        [str(RESERVATIONS), "demo"], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr
    assert "tracing is off: OTEL_SDK_DISABLED=true is set" in done.stdout, done.stdout
    assert "confirmed HTTP 201  alice → book-1" in done.stdout  # the system itself works
    assert "error: the API answered without a trace id: its tracing is off." in done.stderr
    assert "`unset OTEL_SDK_DISABLED`" in done.stderr.split("error:")[1], done.stderr
    assert "(no spans)" not in done.stdout  # it did not wait for the trace


def test_the_demo_tells_the_same_story_every_time(amqp_url: str, tmp_path: Path) -> None:
    asyncio.run(purge_work_queues(amqp_url))
    env = cli_env(amqp_url, tmp_path / ".data", DEMO_EXIT="1")

    def demo() -> str:
        done = subprocess.run(
            [str(RESERVATIONS), "demo"], cwd=tmp_path, env=env, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr
        return done.stdout

    def story(out: str) -> list[str]:
        return re.findall(r"^(?:confirmed|rejected\S*) HTTP \d+  \S+ → \S+$|credits left\s+\d+",
                          out, re.MULTILINE)  # fmt: skip

    first = story(demo())
    # What the README's own commands do between two demos: bob topped up, alice spent.
    with sqlite3.connect(tmp_path / ".data" / "reservations.db") as db:
        db.execute("UPDATE users SET credits = 1000 WHERE username = 'bob'")
        db.execute("UPDATE users SET credits = 0 WHERE username = 'alice'")
    second = demo()

    assert first == [
        "confirmed HTTP 201  alice → book-1",
        "credits left  90",
        "rejected_insufficient_credits HTTP 409  bob → course-1",
    ]
    assert story(second) == first
    assert "the demo users start from their seed credits: alice 100, bob 5" in second


def _logged_under(waterfall: list[str], span_name: str) -> list[str]:
    """The log lines (▸) printed right under the row of ``span_name``."""
    start = next(i for i, line in enumerate(waterfall) if span_name in line and "█" in line)
    found = []
    for line in waterfall[start + 1 :]:
        if "▸" not in line:
            break
        found.append(line)
    return found
