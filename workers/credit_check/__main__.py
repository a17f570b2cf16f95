"""``python -m workers.credit_check``: run the credit-check worker until SIGTERM."""

import asyncio

from messaging import topology
from workers.credit_check.consumer import CreditCheckConsumer
from workers.runtime import consume_until_stopped, run, running

SERVICE_NAME = "credit-check-worker"


async def main(stop: asyncio.Event | None = None) -> None:
    async with running(SERVICE_NAME) as runtime:
        handler = CreditCheckConsumer(
            ledger=runtime.store,
            exchange=runtime.declared.exchanges[topology.RESERVATIONS.name],
            default_exchange=runtime.channel.default_exchange,
            dead_letter_exchange=runtime.declared.exchanges[topology.DEAD_LETTER_EXCHANGE.name],
        )
        await consume_until_stopped(runtime, topology.CREDIT_CHECK, handler, stop)


if __name__ == "__main__":
    run(main)
