"""Reading traces from Tempo's HTTP API (a stand-in serving Tempo's exact v2 JSON shape) and
from the embedded collector's file, and waiting until a trace stops growing."""

import dataclasses
import json
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from cli.collector import SpanStore
from cli.errors import CliError
from cli.spans import SpanRecord
from cli.tempo import TempoClient, grafana_explore_url, normalize_trace_id
from cli.trace_lookup import Source, find_trace
from tests.cli.conftest import TEMPO_V2_SAMPLE, FakeTempo
from tests.cli.tempo_json import EMPTY_TRACE, tempo_v2


def test_a_trace_in_tempos_v2_shape_reads_back_exactly(
    fake_tempo: FakeTempo, confirmed_trace: list[SpanRecord]
) -> None:
    trace_id = confirmed_trace[0].trace_id
    document = tempo_v2(confirmed_trace)
    first = document["trace"]["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert first["traceId"].endswith("==") and first["kind"].startswith("SPAN_KIND_")
    assert isinstance(first["startTimeUnixNano"], str)
    fake_tempo.serve(trace_id, 200, document)

    spans = TempoClient(fake_tempo.url).fetch(trace_id)

    assert fake_tempo.requests == [f"/api/v2/traces/{trace_id}"]
    key = lambda s: s.span_id  # noqa: E731
    assert sorted(spans, key=key) == sorted(confirmed_trace, key=key)


def test_an_unknown_trace_is_an_empty_200_and_means_not_found(fake_tempo: FakeTempo) -> None:
    trace_id = "0" * 31 + "1"
    fake_tempo.serve(trace_id, 200, EMPTY_TRACE)
    assert TempoClient(fake_tempo.url).fetch(trace_id) == []
    with pytest.raises(CliError, match=f"trace {trace_id} not found"):
        find_trace(trace_id, Source.tempo, Path("/nonexistent"), TempoClient(fake_tempo.url), 0.3)
    assert len(fake_tempo.requests) >= 2  # it asked again before giving up


def test_older_tempos_404_also_means_not_found(fake_tempo: FakeTempo) -> None:
    fake_tempo.serve("a" * 32, 404, "trace not found")
    assert TempoClient(fake_tempo.url).fetch("a" * 32) == []


def test_tempo_errors_and_absence_are_one_clear_sentence(fake_tempo: FakeTempo) -> None:
    fake_tempo.serve("b" * 32, 500, "boom")
    with pytest.raises(CliError, match="Tempo answered 500: boom"):
        TempoClient(fake_tempo.url).fetch("b" * 32)
    with pytest.raises(CliError, match="Tempo is not reachable") as raised:
        TempoClient("http://127.0.0.1:9").fetch("b" * 32)
    assert "--source collector" in raised.value.hint


def test_the_real_tempo_3_sample_parses() -> None:
    spans = TempoClient.parse(json.loads(TEMPO_V2_SAMPLE.read_text()))
    assert spans and len({s.trace_id for s in spans}) == 1
    assert all(len(s.trace_id) == 32 and len(s.span_id) == 16 for s in spans)
    assert {s.service for s in spans} >= {"api", "worker"}
    assert {"PRODUCER", "CONSUMER", "SERVER"} <= {s.kind for s in spans}
    ids = {s.span_id for s in spans}
    consumer = next(s for s in spans if s.name == "bench.rpc receive")
    assert consumer.parent_span_id in ids  # the worker's consumer hangs under the API's producer
    assert all(s.end_ns >= s.start_ns > 1_700_000_000 * 10**9 for s in spans)


def test_a_growing_trace_is_returned_once_it_stops_growing(
    fake_tempo: FakeTempo, confirmed_trace: list[SpanRecord]
) -> None:
    """The fulfilment tail is exported after the HTTP answer: early reads see part of it."""
    trace_id = confirmed_trace[0].trace_id
    recent = [_shift_to_now(s, confirmed_trace) for s in confirmed_trace]
    early = [s for s in recent if s.service != "fulfilment-worker"]
    answers = iter([early, early, *[recent] * 100])
    fake_tempo.traces[trace_id] = lambda: (200, tempo_v2(next(answers)))

    spans = find_trace(trace_id, Source.tempo, Path("/nonexistent"), TempoClient(fake_tempo.url), 5)

    assert len(spans) == 18
    assert len(fake_tempo.requests) >= 6  # it watched the full trace stay the same for a while


def test_auto_reads_the_collector_file_first(
    fake_tempo: FakeTempo, confirmed_trace: list[SpanRecord], tmp_path: Path
) -> None:
    store = SpanStore(store_dir=tmp_path)
    store.add(confirmed_trace)
    store.close()
    trace_id = confirmed_trace[0].trace_id
    spans = find_trace(trace_id, Source.auto, tmp_path, TempoClient(fake_tempo.url), 5)
    assert len(spans) == 18
    assert fake_tempo.requests == []  # an old, finished trace: no waiting, no Tempo


def test_auto_falls_back_to_tempo(
    fake_tempo: FakeTempo, confirmed_trace: list[SpanRecord], tmp_path: Path
) -> None:
    trace_id = confirmed_trace[0].trace_id
    fake_tempo.serve(trace_id, 200, tempo_v2(confirmed_trace))
    spans = find_trace(trace_id, Source.auto, tmp_path, TempoClient(fake_tempo.url), 5)
    assert len(spans) == 18 and fake_tempo.requests


def test_trace_ids_are_validated() -> None:
    assert normalize_trace_id(" B906B887-37E1-81A0-9AD2-4B13AA1256F3 ") == (
        "b906b88737e181a09ad24b13aa1256f3"
    )
    with pytest.raises(CliError, match="not a trace id"):
        normalize_trace_id("../../etc/passwd")


def test_the_grafana_explore_url_opens_the_trace_in_the_tempo_datasource() -> None:
    url = grafana_explore_url("http://localhost:3000/", "b906b88737e181a09ad24b13aa1256f3")
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("http", "localhost:3000", "/explore")
    query = parse_qs(parts.query)
    assert query["schemaVersion"] == ["1"] and query["orgId"] == ["1"]
    (pane,) = json.loads(query["panes"][0]).values()
    assert pane["datasource"] == "tempo"
    (target,) = pane["queries"]
    assert target["datasource"] == {"type": "tempo", "uid": "tempo"}
    assert (target["queryType"], target["query"]) == ("traceql", "b906b88737e181a09ad24b13aa1256f3")


def _shift_to_now(span: SpanRecord, trace: list[SpanRecord]) -> SpanRecord:
    """The recorded trace, as if it had just happened (an old trace needs no settling)."""
    offset = time.time_ns() - max(s.end_ns for s in trace)
    return dataclasses.replace(span, start_ns=span.start_ns + offset, end_ns=span.end_ns + offset)
