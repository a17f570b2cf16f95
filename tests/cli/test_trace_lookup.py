"""`reservations trace`: a trace is shown once its tree is whole, or with a word on what is
missing. Services run by hand export every 5 s each, and a trace read between two batches
showed the fulfilment's spans alone, its CONSUMER span drawn as the root (a new user's)."""

import dataclasses

from cli.spans import SpanRecord
from cli.trace_lookup import incomplete_note, missing_parents, whole
from tests.traces import CONFIRMED_PROCESS

API = "reservations-api"


def test_a_whole_reservation_is_whole(confirmed_trace: list[SpanRecord]) -> None:
    assert whole(confirmed_trace)
    assert incomplete_note(confirmed_trace) is None


def test_without_the_api_s_batch_the_trace_lacks_its_root_and_says_so(
    confirmed_trace: list[SpanRecord],
) -> None:
    without_api = [span for span in confirmed_trace if span.service != API]
    assert not whole(without_api)
    assert missing_parents(without_api) == 1  # the request's PRODUCER, in the API
    note = incomplete_note(without_api)
    assert note is not None and note.startswith(
        "the trace is not complete yet: 1 span shown without its parent (services run by hand "
        "export spans every 5 s"
    ), note


def test_the_fulfilment_s_batch_alone_is_not_whole(confirmed_trace: list[SpanRecord]) -> None:
    consumer = next(span for span in confirmed_trace if span.name == CONFIRMED_PROCESS)
    tail = [consumer, *(s for s in confirmed_trace if s.parent_span_id == consumer.span_id)]
    assert not whole(tail)


def test_two_missing_parents_are_counted(confirmed_trace: list[SpanRecord]) -> None:
    """The API's spans and the credit-check worker's are both late: the fulfilment's CONSUMER
    and the API's reply CONSUMER each lack their parent, beside the API's own root."""
    worker_late = [s for s in confirmed_trace if s.service != "credit-check-worker"]
    assert missing_parents(worker_late) == 2
    note = incomplete_note(worker_late)
    assert note is not None and "2 spans shown without their parents" in note


def test_a_request_from_a_traced_client_is_whole(confirmed_trace: list[SpanRecord]) -> None:
    """Its SERVER span's parent is the client's span, which is never exported here."""
    remote = [
        dataclasses.replace(span, parent_span_id="c" * 16) if span.parent_span_id is None else span
        for span in confirmed_trace
    ]
    assert whole(remote)


def test_a_client_s_several_requests_in_one_trace_are_whole(
    confirmed_trace: list[SpanRecord],
) -> None:
    """A traced client that sends a POST and then polls in one trace: several SERVER spans at
    the top, each with the client's parent (a review's: one of them was counted missing)."""
    root = next(span for span in confirmed_trace if span.parent_span_id is None)
    poll = dataclasses.replace(
        root, span_id="d" * 16, parent_span_id="e" * 16, name="GET /reservations/{id}"
    )
    posted = dataclasses.replace(root, parent_span_id="c" * 16)
    trace = [posted if span is root else span for span in confirmed_trace] + [poll]
    assert whole(trace)
