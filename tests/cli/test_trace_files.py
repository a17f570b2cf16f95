"""The embedded collector's file: how `trace` reads it from another process."""

import dataclasses
from pathlib import Path

from cli.collector import SpanStore
from cli.spans import SpanRecord
from cli.trace_files import (
    TRACES_FILE,
    compact_traces_file,
    read_trace,
    read_traces_file,
)


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
