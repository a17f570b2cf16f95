"""Finding a trace where it is (the embedded collector's file, or Tempo) and waiting until it
is complete: spans arrive in batches from three processes, the fulfilment tail last."""

import time
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path

from tenacity import RetryCallState, Retrying, retry_if_result, stop_after_delay, wait_fixed

from cli.errors import CliError
from cli.spans import SpanRecord
from cli.tempo import TempoClient
from cli.trace_files import TRACES_FILE, read_trace

Fetch = Callable[[], list[SpanRecord]]
# A trace whose newest span ended this long ago gets no more spans: no need to watch it settle.
QUIET_AFTER_NS = 5_000_000_000
# Why a trace can be late: said wherever a CLI command finds one missing or partial.
LATE_SPANS = (
    "services run by hand export spans every 5 s (the SDK's default OTEL_BSP_SCHEDULE_DELAY; "
    "`reservations run` sets 200 ms)"
)


def missing_parents(spans: list[SpanRecord]) -> int:
    """How many parents the trace lacks (yet): its spans that name a parent it does not hold,
    but SERVER spans (a traced client's requests: their parents are the client's, never
    exported here). A CONSUMER at the top waits for its PRODUCER, from another process's
    batch."""
    ids = {span.span_id for span in spans}
    return sum(
        1
        for span in spans
        if span.parent_span_id and span.parent_span_id not in ids and span.kind != "SERVER"
    )


def whole(spans: list[SpanRecord]) -> bool:
    """A trace with spans, every one of whose parents is in it (the root too)."""
    return bool(spans) and missing_parents(spans) == 0


def incomplete_note(spans: list[SpanRecord]) -> str | None:
    """What a reader of a partial waterfall should know, or None for a whole tree."""
    if whole(spans):
        return None
    missing = missing_parents(spans)
    return (
        f"the trace is not complete yet: {missing} span{'s' if missing > 1 else ''} shown "
        f"without {'their parents' if missing > 1 else 'its parent'} ({LATE_SPANS}); run the "
        "same command again, or give it `--wait 10`."
    )


class Source(StrEnum):
    auto = "auto"
    collector = "collector"
    tempo = "tempo"


def wait_until_stable(
    fetch: Fetch,
    *,
    within: float,
    settle: float = 1.0,
    poll: float = 0.2,
    complete: Callable[[list[SpanRecord]], bool] = bool,
) -> list[SpanRecord]:
    """Poll ``fetch`` until ``complete(spans)`` holds and the span count has not changed for
    ``settle`` seconds, or ``within`` seconds pass; returns the last spans seen either way."""
    seen = {"count": -1, "since": time.monotonic()}

    def unsettled(spans: list[SpanRecord]) -> bool:
        now = time.monotonic()
        if len(spans) != seen["count"]:
            seen.update(count=len(spans), since=now)
        if not complete(spans):
            return True
        quiet = time.time_ns() - max(s.end_ns for s in spans) > QUIET_AFTER_NS if spans else False
        return not quiet and now - seen["since"] < settle

    def last_result(state: RetryCallState) -> list[SpanRecord]:
        assert state.outcome is not None
        result: list[SpanRecord] = state.outcome.result()
        return result

    retrying = Retrying(
        stop=stop_after_delay(within),
        wait=wait_fixed(poll),
        retry=retry_if_result(unsettled),
        retry_error_callback=last_result,
    )
    spans: list[SpanRecord] = retrying(fetch)
    return spans


def find_trace(
    trace_id: str,
    source: Source,
    data_dir: Path,
    tempo: TempoClient,
    within: float,
    complete: Callable[[list[SpanRecord]], bool] = bool,
) -> list[SpanRecord]:
    """auto: the collector's file when it holds the trace, else Tempo (if it is reachable).
    Waits, up to ``within``, until ``complete(spans)`` holds and the trace stops growing."""
    tempo_errors: list[str] = []

    def fetch() -> list[SpanRecord]:
        if source is not Source.tempo and (spans := read_trace(data_dir, trace_id)):
            return spans
        if source is Source.collector:
            return []
        try:
            return tempo.fetch(trace_id)
        except CliError as error:
            if source is Source.tempo:
                raise
            tempo_errors[:] = [error.message]
            return []

    spans = wait_until_stable(fetch, within=within, complete=complete)
    if not spans:
        where = {
            Source.collector: f"the collector's {data_dir / TRACES_FILE}",
            Source.tempo: f"Tempo ({tempo.base_url})",
            Source.auto: f"{data_dir / TRACES_FILE}, nor in Tempo ({tempo.base_url})",
        }[source]
        raise CliError(
            f"trace {trace_id} not found (yet) in {where} after {within:g} s."
            + (f" {tempo_errors[0]}" if tempo_errors else ""),
            hint="spans may still be on their way (try again, or `--wait 15`); a trace "
            "recorded by another collector or a sampled-out request is not there.",
        )
    return spans
