"""`trace --last`: the newest reservation, not the newest trace, and a word when it is stale."""

import dataclasses
import json
import os
import time
from pathlib import Path

import pytest

from cli.collector import SpanStore
from cli.errors import CliError
from cli.last_reservation import last_reservation
from cli.spans import SpanRecord
from cli.trace_files import RUN_FILE, latest_reservation, mark_collector_started
from tests.cli.test_trace_files import copy_of

NOW = time.time_ns()
MINUTE = 60 * 10**9


def users_read(trace_id: str, start_ns: int) -> list[SpanRecord]:
    """A `GET /users` trace: one service, no messaging."""
    root = SpanRecord(trace_id, "a" * 16, None, "GET /users", "SERVER", "reservations-api",
                      start_ns, start_ns + 5_000_000)  # fmt: skip
    return [root, dataclasses.replace(root, span_id="b" * 16, parent_span_id="a" * 16,
                                      name="SELECT users", kind="CLIENT")]  # fmt: skip


def record(tmp_path: Path, confirmed: list[SpanRecord], reservation_at: int) -> str:
    """A reservation at ``reservation_at`` and, after it, a `GET /users`."""
    first = min(s.start_ns for s in confirmed)
    store = SpanStore(store_dir=tmp_path)
    store.add(copy_of(confirmed, "1" * 32, reservation_at - first))
    store.add(users_read("2" * 32, reservation_at + MINUTE // 60))
    store.close()
    return "1" * 32


def test_the_last_reservation_is_not_the_last_trace(
    confirmed_trace: list[SpanRecord], tmp_path: Path, collector: str
) -> None:
    reservation = record(tmp_path, confirmed_trace, NOW - 5 * 10**9)
    assert latest_reservation(tmp_path) == (reservation, NOW - 5 * 10**9)
    (tmp_path / RUN_FILE).write_text(
        json.dumps({"pid": os.getpid(), "started_ns": NOW - MINUTE, "endpoint": collector})
    )

    last = last_reservation(tmp_path, now_ns=NOW)
    assert last.trace_id == reservation
    assert last.note == "the last reservation, 5 s ago." and not last.stale


def test_one_from_an_earlier_run_says_so(
    confirmed_trace: list[SpanRecord], tmp_path: Path, collector: str
) -> None:
    reservation = record(tmp_path, confirmed_trace, NOW - 3 * 3600 * 10**9)
    mark_collector_started(tmp_path, collector)  # this process, listening: it is running

    last = last_reservation(tmp_path)
    assert last.trace_id == reservation and last.stale
    assert "is from an earlier run (3 h ago)" in last.note
    assert "none was recorded since the collector running now started" in last.note


def test_with_no_collector_running_it_says_so(
    confirmed_trace: list[SpanRecord], tmp_path: Path
) -> None:
    reservation = record(tmp_path, confirmed_trace, NOW - 20 * MINUTE)
    # A mark left by a killed collector: above Linux's largest pid, so no process has it.
    (tmp_path / RUN_FILE).write_text(json.dumps({"pid": 2**22 + 1, "started_ns": 0}))

    last = last_reservation(tmp_path, now_ns=NOW)
    assert last.trace_id == reservation and last.stale
    assert "20 min ago; no collector is recording there now" in last.note
    assert "`reservations collector`" in last.note


def test_an_old_reservation_of_this_run_is_called_old(
    confirmed_trace: list[SpanRecord], tmp_path: Path, collector: str
) -> None:
    record(tmp_path, confirmed_trace, NOW - 30 * MINUTE)
    (tmp_path / RUN_FILE).write_text(
        json.dumps({"pid": os.getpid(), "started_ns": 0, "endpoint": collector})
    )
    last = last_reservation(tmp_path, now_ns=NOW)
    assert last.note == "the last reservation, 30 min ago." and last.stale


def test_without_any_reservation_it_says_how_to_make_one(tmp_path: Path) -> None:
    store = SpanStore(store_dir=tmp_path)
    store.add(users_read("2" * 32, NOW))
    store.close()
    with pytest.raises(CliError, match="no reservation's trace in") as raised:
        last_reservation(tmp_path)
    assert "reservations reserve alice book-1" in raised.value.hint
