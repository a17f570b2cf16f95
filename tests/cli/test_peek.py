"""`reservations peek` waits for the span its message's traceparent names, and the consumer
span under it, however late they arrive (services run by hand export every 5 s)."""

import threading
from pathlib import Path

from cli.collector import SpanStore
from cli.peek import _with_consumer
from cli.spans import SpanRecord
from cli.tempo import TempoClient
from cli.trace_lookup import Source, find_trace

REQUEST_PUBLISH = "publish reservations:reservation.requested"


def test_the_waterfall_waits_for_the_workers_spans(
    confirmed_trace: list[SpanRecord], tmp_path: Path
) -> None:
    producer = next(s for s in confirmed_trace if s.name == REQUEST_PUBLISH)
    api = [s for s in confirmed_trace if s.service == "reservations-api"]
    rest = [s for s in confirmed_trace if s.service != "reservations-api"]
    store = SpanStore(store_dir=tmp_path)
    store.add(api)  # the API's batch came first
    later = threading.Timer(1.0, store.add, args=(rest,))
    later.start()
    tempo = TempoClient("http://127.0.0.1:9")  # not asked: the source is the collector's file
    try:
        partial = find_trace(producer.trace_id, Source.collector, tmp_path, tempo, within=5.0)
        assert len(partial) == len(api)  # what peek printed before: the API's spans alone
        whole = find_trace(
            producer.trace_id, Source.collector, tmp_path, tempo, within=5.0,
            complete=lambda spans: _with_consumer(spans, producer.span_id),
        )  # fmt: skip
        assert len(whole) == len(confirmed_trace)
    finally:
        later.join()
        store.close()


def test_the_producer_alone_is_not_enough() -> None:
    def span(span_id: str, parent: str | None) -> SpanRecord:
        return SpanRecord("t" * 32, span_id, parent, "s", "INTERNAL", "svc", 0, 1)

    assert not _with_consumer([], "p")
    assert not _with_consumer([span("p", None)], "p")
    assert _with_consumer([span("p", None), span("c", "p")], "p")
