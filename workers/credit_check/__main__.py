"""``python -m workers.credit_check``: run the credit-check worker until SIGTERM."""

import asyncio

from messaging import topology
from messaging.messages import ReservationRequested
from workers.credit_check.handler import credit_check
from workers.runtime import Worker, run, serve

WORKER = Worker("credit-check-worker", topology.CREDIT_CHECK, ReservationRequested, credit_check)


async def main(stop: asyncio.Event | None = None) -> None:
    await serve(WORKER, stop)


if __name__ == "__main__":
    run(main)
