"""`reservations run` as a real process: it starts the system, and the other commands talk to
it. Starting, stopping and refusing to start: test_run_lifecycle.py."""

import asyncio
import re
import time
from collections.abc import Iterator

import pytest

from domain.credits import MAX_TOP_UP
from tests.cli.running import RunningCli, start_cli
from tests.system import purge_work_queues

pytestmark = pytest.mark.e2e

SERVICES = ("reservations-api", "credit-check-worker", "fulfilment-worker")


@pytest.fixture(scope="module")
def running(amqp_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCli]:
    asyncio.run(purge_work_queues(amqp_url))
    running = start_cli(amqp_url, tmp_path_factory.mktemp("cli-run"))
    yield running
    if running.popen.poll() is None:
        running.interrupt()


def test_reserve_prints_the_outcome_and_a_trace_that_trace_renders(running: RunningCli) -> None:
    reserved = running.cli("reserve", "alice", "book-1")
    assert reserved.returncode == 0, reserved.stderr
    assert reserved.stdout.startswith("confirmed HTTP 201  alice → book-1")
    assert re.search(r"credits left\s+90", reserved.stdout)
    trace_id = re.search(r"trace id\s+([0-9a-f]{32})", reserved.stdout)
    assert trace_id, reserved.stdout

    shown = running.cli("trace", trace_id[1], "--source", "collector", "--wait", "15")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].startswith(f"trace {trace_id[1]} · ")
    assert lines[2].startswith("POST /reservations") and "SERVER" in lines[2]
    for service in SERVICES:  # the async fulfilment tail included
        assert service in shown.stdout, shown.stdout
    assert "process reservations:reservation.confirmed:fulfilment" in shown.stdout

    assert running.cli("users").returncode == 0  # a newer trace, but not a reservation
    last = running.cli("trace", "--last", "--attrs")
    assert last.returncode == 0, last.stderr
    assert last.stdout.splitlines()[0].startswith(f"trace {trace_id[1]} · ")
    assert re.match(r"the last reservation, \d+ s ago\.", last.stderr), last.stderr
    assert "reservation.outcome = confirmed" in last.stdout


def test_a_rejected_reservation_exits_non_zero(running: RunningCli) -> None:
    rejected = running.cli("reserve", "bob", "course-1")
    assert rejected.returncode == 1
    assert rejected.stdout.startswith("rejected_insufficient_credits HTTP 409")
    assert "error: reservation not confirmed: not enough credits" in rejected.stderr
    assert re.search(r"trace id\s+[0-9a-f]{32}", rejected.stdout)


def test_users_and_top_up(running: RunningCli) -> None:
    topped = running.cli("top-up", "carol", "7")
    assert topped.returncode == 0, topped.stderr
    assert topped.stdout.strip() == "carol now has 47 credits (+7)"
    listed = running.cli("users")
    assert listed.returncode == 0, listed.stderr
    assert re.search(r"carol\s+│\s+47", listed.stdout)
    assert re.search(r"course-1\s+│\s+60", listed.stdout)
    # Past the API's bound per top-up: refused by the command itself, before any request.
    too_much = running.cli("top-up", "carol", str(MAX_TOP_UP + 1))
    assert too_much.returncode == 2, too_much.stdout
    assert f"less than or equal to {MAX_TOP_UP}" in too_much.stderr, too_much.stderr
    unknown = running.cli("top-up", "nobody", "7")
    assert unknown.returncode == 1 and "unknown user 'nobody'" in unknown.stderr
    # A path in a username never reaches another user's credits.
    bob = re.compile(r"bob\s+│\s+\d+")
    before = bob.search(running.cli("users").stdout)
    sneaky = running.cli("top-up", "carol/../bob", "7")
    assert sneaky.returncode == 1 and "username 'carol/../bob' is not valid" in sneaky.stderr
    dots = running.cli("top-up", "..", "7")
    assert dots.returncode == 1 and "unknown user '..'" in dots.stderr, dots.stderr
    after = bob.search(running.cli("users").stdout)
    assert before and after and before[0] == after[0]


def test_a_malformed_idempotency_key_is_refused_in_one_line_not_replaced(
    running: RunningCli,
) -> None:
    """Empty, not ASCII (a traceback, where httpx could not encode the header), or with a
    quote (sent mangled): refused before any request, as the API would."""
    for key in ("", "   ", "caf\u00e9", 'a"b', "a\\b", "x" * 256):
        done = running.cli("reserve", "carol", "book-1", "--idempotency-key", key)
        assert done.returncode == 1, (key, done.stdout, done.stderr)
        assert f"malformed Idempotency-Key {key!r}" in done.stderr, (key, done.stderr)
        assert "Traceback" not in done.stderr, done.stderr
    assert running.cli("reserve", "carol", "book-1", "--idempotency-key", "k-1").returncode == 0


def test_load_sends_n_reservations_and_summarises(running: RunningCli) -> None:
    loaded = running.cli("load", "-n", "20", "-c", "4", "carol", "book-1")
    assert loaded.returncode == 0, loaded.stderr
    assert "20 reservations, concurrency 4" in loaded.stdout
    counts = dict(re.findall(r"│ (\d{3} \w+)\s+│\s+(\d+) │", loaded.stdout))
    assert sum(map(int, counts.values())) == 20, loaded.stdout
    assert set(counts) <= {"201 confirmed", "409 rejected_insufficient_credits"}
    assert "p50 latency" in loaded.stdout and "p99 latency" in loaded.stdout


def test_peek_of_a_request_the_api_refuses_ends_at_once(running: RunningCli) -> None:
    """Nothing is published for a 422: peek waited 10 s for a message that could not come."""
    started = time.monotonic()
    peeked = running.cli("peek", "x y", "book-1")
    assert peeked.returncode == 1, peeked.stdout + peeked.stderr
    assert "nothing was published" in peeked.stderr, peeked.stderr
    assert time.monotonic() - started < 8


def test_peek_shows_the_message_whose_traceparent_is_the_producer_span(
    running: RunningCli,
) -> None:
    assert running.cli("top-up", "carol", "25").returncode == 0  # whatever earlier tests spent
    peeked = running.cli("peek", "carol", "book-2")
    assert peeked.returncode == 0, peeked.stdout[-2000:] + peeked.stderr
    out = peeked.stdout
    # The worker still got the original: the reservation was confirmed.
    assert out.startswith("confirmed HTTP 201  carol → book-2"), out
    for field in ("routing_key", "reservation.requested", "correlation_id", "reply_to"):
        assert field in out, out
    assert re.search(r"content_type\s+application/json", out), out
    assert re.search(r"delivery_mode\s+2 \(persistent\)", out), out
    header = re.search(r"headers\.traceparent\s+\"00-([0-9a-f]{32})-([0-9a-f]{16})-0[13]\"", out)
    assert header, out
    trace_id, span_id = header[1], header[2]  # flags: sampled (W3C level 2 adds random, 02)
    assert re.search(rf"trace id\s+{trace_id}\s+\(the reservation's trace\)", out), out
    assert re.search(
        rf"span id\s+{span_id}\s+= publish reservations:reservation.requested "
        r"\(PRODUCER, reservations-api\)",
        out,
    ), out
    assert f"trace {trace_id} · " in out  # the waterfall of that same trace follows
    assert "process reservations:reservation.requested:credit-check" in out
