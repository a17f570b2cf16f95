"""``python -m workers.fulfilment``: run the fulfilment worker until SIGTERM."""

import asyncio

from messaging import topology
from workers.fulfilment.consumer import FulfilmentConsumer
from workers.runtime import consume_until_stopped, run, running

SERVICE_NAME = "fulfilment-worker"


async def main(stop: asyncio.Event | None = None) -> None:
    async with running(SERVICE_NAME) as runtime:
        handler = FulfilmentConsumer(
            downloads=runtime.store,
            dead_letter_exchange=runtime.declared.exchanges[topology.DEAD_LETTER_EXCHANGE.name],
        )
        await consume_until_stopped(runtime, topology.FULFILMENT, handler, stop)


if __name__ == "__main__":
    run(main)
