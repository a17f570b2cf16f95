"""Why the messaging metrics exist: at 10 % sampling, Tempo receives (and its span metrics
count) about a tenth of the process spans, while the counters count every message.

N reservations (``SAMPLED_RESERVATIONS``, 100 by default; the README's figures are from 500)
go through the real API and workers at ``parentbased_traceidratio`` 0.1, everything exported to
one OTLP receiver (the CLI's embedded collector). Run with ``-s`` to see the figures.
"""

import asyncio
import os
import sys
from collections.abc import Callable

import httpx
import pytest

from cli.collector import OtlpReceiver
from tests.stack import System
from tests.traces import CONFIRMED_PROCESS, REQUEST_PROCESS
from tests.waiting import eventually

pytestmark = pytest.mark.e2e

N = int(os.environ.get("SAMPLED_RESERVATIONS", "100"))
CONCURRENCY = 10
RATIO = 0.1
CONSUMED = "messaging.client.consumed.messages"
REQUESTS = {"messaging.destination.name": "reservations:reservation.requested:credit-check"}
CONFIRMED = {"messaging.destination.name": CONFIRMED_PROCESS.split()[1]}


async def _reserve_all(api_url: str) -> list[int]:
    limit = asyncio.Semaphore(CONCURRENCY)
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as client:

        async def one() -> int:
            async with limit:
                body = {"username": "alice", "item_id": "book-1"}
                return (await client.post("/reservations", json=body)).status_code

        return await asyncio.gather(*(one() for _ in range(N)))


def test_counters_stay_exact_while_sampled_spans_drop(
    make_system: Callable[[], System], api_port: int, receiver: OtlpReceiver
) -> None:
    assert 1 <= N <= 2000, "bounded: at most 2000 reservations"
    system = make_system()
    system.seed(users={"alice": 10 * N}, items={"book-1": 1})
    system.base_env |= {
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": str(RATIO),
        "OTEL_METRIC_EXPORT_INTERVAL": "500",
    }
    system.start_worker("workers.credit_check")
    system.start_worker("workers.fulfilment")
    system.start_api(api_port)

    statuses = asyncio.run(_reserve_all(system.api_url))
    assert statuses == [201] * N
    metrics = receiver.metrics
    for attempt in eventually(60):
        with attempt:
            assert metrics.total(CONSUMED, CONFIRMED) == N
    system.stop_all()  # every process flushes its last spans and points on the way out

    spans = receiver.store.all_spans()
    processed = sum(1 for s in spans if s.name == REQUEST_PROCESS)
    traces = len({s.trace_id for s in spans if s.name == "POST /reservations"})
    consumed = metrics.total(CONSUMED, REQUESTS)
    http = metrics.total("http.server.request.duration", {"http.route": "/reservations"})
    sys.stdout.write(
        f"\n{N} reservations at ratio {RATIO}: {traces} traces sampled, "
        f"{processed} '{REQUEST_PROCESS}' spans received; "
        f"{CONSUMED} (credit-check) = {consumed:.0f}, "
        f"(fulfilment) = {metrics.total(CONSUMED, CONFIRMED):.0f}, "
        f"http.server.request.duration count = {http:.0f}\n"
    )
    assert consumed == N and metrics.total(CONSUMED, CONFIRMED) == N and http == N
    assert processed == traces < N  # a trace is whole or absent, and most are absent
    if N >= 100:  # about a tenth: well inside 5 binomial standard deviations
        assert abs(processed - RATIO * N) <= 5 * (N * RATIO * (1 - RATIO)) ** 0.5 + 1
