"""Counting the spans the receiver got: how many one request makes, and waiting for them all."""

import time

import httpx

from bench import db
from bench.plan import CALIBRATION_REQUESTS, bsp_delay_s
from bench.receiver import ReceiverClient
from devtools.waiting import poll_async


async def calibrate(port: int, receiver: ReceiverClient) -> int:
    """Spans one confirmed reservation produces, counted per trace id on a few requests.

    Every calibration trace must end up with the same count: that is also a check that the
    whole request (API, worker, fulfilment) lands in one trace.
    """
    trace_ids = []
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        for i in range(CALIBRATION_REQUESTS):
            response = await client.post(
                "/reservations", json={"username": f"bench-{i}", "item_id": db.ITEM_ID}
            )
            if response.status_code != 201:
                raise RuntimeError(
                    f"calibration request got {response.status_code}: {response.text}"
                )
            trace_ids.append(response.headers["x-trace-id"])
    # The processes export at the latest one schedule delay after the last span ends.
    settle = time.monotonic() + bsp_delay_s() + 1.0

    def settled(counts: dict[str, int]) -> bool:
        values = set(counts.values())
        return time.monotonic() >= settle and len(values) == 1 and 0 not in values

    counts = await poll_async(
        lambda: receiver.trace_counts(trace_ids),
        until=settled,
        within=settle - time.monotonic() + 20,
        every=0.25,
    )
    if not settled(counts):
        raise RuntimeError(f"traces did not settle to one span count per request: {counts}")
    return counts[trace_ids[0]]


async def wait_for_spans(receiver: ReceiverClient, target: int) -> int:
    """Wait until the receiver holds ``target`` spans, or one schedule delay + 10 s passed."""
    return await poll_async(
        receiver.received, until=lambda n: n >= target, within=bsp_delay_s() + 10, every=0.25
    )
