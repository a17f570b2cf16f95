"""The embedded collector's file: how `trace` reads it from another process."""

import dataclasses
import json
import logging
import os
from pathlib import Path

import pytest

from cli.collector import SpanStore
from cli.log_records import LogLine
from cli.log_store import LOGS_FILE, LogStore, compact_logs_file, read_trace_logs
from cli.spans import SpanEvent, SpanRecord
from cli.trace_files import (
    REWRITE_AFTER,
    TRACES_FILE,
    compact_traces_file,
    mark_collector_started,
    read_trace,
    read_traces_file,
    running_collector,
)
from devtools.addresses import free_port


def copy_of(trace: list[SpanRecord], trace_id: str, shift_ns: int) -> list[SpanRecord]:
    return [
        dataclasses.replace(
            s, trace_id=trace_id, start_ns=s.start_ns + shift_ns, end_ns=s.end_ns + shift_ns
        )
        for s in trace
    ]


def test_one_trace_is_read_back_from_a_file_holding_several(
    confirmed_trace: list[SpanRecord], tmp_path: Path
) -> None:
    store = SpanStore(store_dir=tmp_path)
    store.add(copy_of(confirmed_trace, "1" * 32, 0))
    store.add(confirmed_trace)
    store.close()
    assert read_trace(tmp_path, confirmed_trace[0].trace_id) == confirmed_trace
    assert read_trace(tmp_path, "2" * 32) == []
    assert read_trace(tmp_path / "missing", "2" * 32) == []


def test_compaction_keeps_the_newest_traces_on_disk(
    confirmed_trace: list[SpanRecord], tmp_path: Path
) -> None:
    store = SpanStore(store_dir=tmp_path)
    for i in range(5):
        store.add(copy_of(confirmed_trace, f"{i}" * 32, i))
    store.close()
    compact_traces_file(tmp_path, max_traces=2)
    assert list(read_traces_file(tmp_path)) == ["3" * 32, "4" * 32]
    assert len((tmp_path / TRACES_FILE).read_text().splitlines()) == 2 * len(confirmed_trace)


def test_a_long_run_keeps_the_file_bounded_and_readable(
    confirmed_trace: list[SpanRecord], tmp_path: Path
) -> None:
    """The file is rewritten from the store's memory as it grows, not only at the next start:
    3,000 reservations wrote 29 MB of it before (so some 1 GB for a load of 100,000). Whatever
    the moment, it holds every trace the store holds, whole, and past REWRITE_AFTER times them
    by one batch at most."""
    store = SpanStore(max_traces=3, store_dir=tmp_path)
    held = 3 * len(confirmed_trace)
    for i in range(40):
        store.add(copy_of(confirmed_trace, f"{i:032x}", i))
        on_disk = read_traces_file(tmp_path)
        lines = len((tmp_path / TRACES_FILE).read_text().splitlines())
        assert lines <= REWRITE_AFTER * held + len(confirmed_trace), i
        newest = [f"{j:032x}" for j in range(max(0, i - 2), i + 1)]
        for trace_id in newest:
            assert on_disk[trace_id] == store.trace(trace_id), i
    store.add(confirmed_trace[:1])  # appending goes on after the rewrites
    assert read_trace(tmp_path, confirmed_trace[0].trace_id) == confirmed_trace[:1]
    store.close()
    assert not list(tmp_path.glob("*.tmp"))


def test_a_rewrite_that_fails_is_a_warning_and_spans_keep_coming(
    confirmed_trace: list[SpanRecord], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The rename cannot happen (a directory took the file's name): the collector warns and
    goes on taking spans, rather than raise in every export from then on."""
    store = SpanStore(max_traces=1, store_dir=tmp_path)
    (tmp_path / TRACES_FILE).unlink()
    (tmp_path / TRACES_FILE).mkdir()
    for i in range(REWRITE_AFTER + 2):
        store.add(copy_of(confirmed_trace, f"{i:032x}", i))
    assert store.trace(f"{REWRITE_AFTER + 1:032x}") == copy_of(
        confirmed_trace, f"{REWRITE_AFTER + 1:032x}", REWRITE_AFTER + 1
    )
    assert any("could not rewrite" in r.getMessage() for r in caplog.records), caplog.text
    assert not list(tmp_path.glob("*.tmp"))
    store.close()


def test_a_span_is_written_as_dataclasses_asdict_wrote_it(
    confirmed_trace: list[SpanRecord],
) -> None:
    """to_dict skips asdict's deep copies: the same JSON, so files of earlier runs still read.
    One span with an event and a link besides the trace's (which have neither)."""
    failed = dataclasses.replace(
        confirmed_trace[0],
        status="ERROR",
        events=(SpanEvent("exception", 7, {"exception.type": "ValueError", "n": [1, 2]}),),
        links=(f"{'a' * 32}:{'b' * 16}",),
    )
    for span in [*confirmed_trace, failed]:
        assert json.dumps(span.to_dict()) == json.dumps(dataclasses.asdict(span))
        assert SpanRecord.from_dict(json.loads(json.dumps(span.to_dict()))) == span


def test_a_log_line_is_written_as_dataclasses_asdict_wrote_it() -> None:
    line = LogLine("a" * 32, "b" * 16, 5, "WARN", "slow", "api", {"attempt": 2, "ids": ["x"]})
    assert json.dumps(line.to_dict()) == json.dumps(dataclasses.asdict(line))
    assert LogLine.from_dict(json.loads(json.dumps(line.to_dict()))) == line


def test_a_mark_whose_pid_lives_on_in_another_process_is_no_collector(
    tmp_path: Path, collector: str
) -> None:
    """collector.json names this test's own pid, alive, but nothing listens on its endpoint:
    a pid taken again after the collector died, not a collector to refuse a new one for."""
    mark_collector_started(tmp_path, f"http://127.0.0.1:{free_port()}")
    assert running_collector(tmp_path) is None
    mark_collector_started(tmp_path, collector)  # something listens there
    run = running_collector(tmp_path)
    assert run is not None and run["pid"] == os.getpid()


def test_damaged_lines_are_skipped_and_the_next_record_starts_a_line_of_its_own(
    confirmed_trace: list[SpanRecord], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A write cut short (a full disk, a crash) leaves half a line: `run`, `collector` and
    `trace` stopped on it with a traceback (a review truncated the files). The intact
    records are read, the damaged ones skipped with a warning, and what the next run
    appends starts on a line of its own."""
    traces = SpanStore(store_dir=tmp_path)
    for i in range(3):
        traces.add(copy_of(confirmed_trace, f"{i}" * 32, i))
    traces.close()
    logs = LogStore(store_dir=tmp_path)
    logs.add([LogLine(f"{i}" * 32, "a" * 16, i, "INFO", f"line {i}", "api") for i in range(3)])
    logs.close()
    for name in (TRACES_FILE, LOGS_FILE):
        whole = (tmp_path / name).read_bytes()
        cut = whole[: whole.rindex(b"\n", 0, len(whole) - 1) + 20]  # the last line cut short
        (tmp_path / name).write_bytes(cut + b"\n\xff\xfe not json\n[1, 2]\n{}\n" + cut[-20:])

    assert list(read_traces_file(tmp_path)) == ["0" * 32, "1" * 32, "2" * 32]
    assert len(read_trace(tmp_path, "2" * 32)) == len(confirmed_trace) - 1
    assert [line.body for line in read_trace_logs(tmp_path, "1" * 32)] == ["line 1"]
    compact_logs_file(tmp_path, max_traces=1)
    assert [line.body for line in read_trace_logs(tmp_path, "1" * 32)] == ["line 1"]
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"{tmp_path / TRACES_FILE}: skipped 5 damaged line(s)" in warned[0], warned

    again = SpanStore(store_dir=tmp_path)
    again.add(copy_of(confirmed_trace, "9" * 32, 9))
    again.close()
    assert read_trace(tmp_path, "9" * 32) == copy_of(confirmed_trace, "9" * 32, 9)
