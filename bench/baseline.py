"""The baseline: a bare aio-pika request/reply loop, no HTTP, no database, no tracing.

``python -m bench.baseline server --url URL --queue Q`` consumes a durable quorum queue (the
same kind as ``credit-check``) with manual acks and answers each request on its
``reply_to`` with the same correlation id, over a confirm channel, then acks: the worker's
broker traffic without the worker. ``python -m bench.baseline client ...`` keeps
``--concurrency`` requests in flight, each a persistent JSON message published with
publisher confirms and ``mandatory``, its reply awaited over direct reply-to (as
``messaging.rpc`` does).
"""

import argparse
import asyncio
import json
import signal
import time
import uuid
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from bench import protocol
from bench.window import Window

DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
QUEUE_ARGUMENTS: dict[str, Any] = {"x-queue-type": "quorum"}
REQUEST_TIMEOUT_S = 10.0


async def serve(url: str, queue_name: str, prefetch: int) -> None:
    connection = await aio_pika.connect(url)
    channel = await connection.channel(publisher_confirms=True)
    await channel.set_qos(prefetch_count=prefetch)
    queue = await channel.declare_queue(queue_name, durable=True, arguments=QUEUE_ARGUMENTS)
    exchange = channel.default_exchange

    async def on_request(message: AbstractIncomingMessage) -> None:
        request = json.loads(message.body)
        reply = aio_pika.Message(
            json.dumps({"request_id": request["request_id"], "status": "confirmed"}).encode(),
            content_type="application/json",
            correlation_id=message.correlation_id,
        )
        await exchange.publish(reply, routing_key=message.reply_to or "", mandatory=False)
        await message.ack()

    tag = await queue.consume(on_request)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    protocol.emit("ready")
    await stop.wait()
    await queue.cancel(tag)
    await queue.delete(if_unused=False, if_empty=False)
    await connection.close()


async def drive(
    url: str, queue_name: str, concurrency: int, warmup: float, duration: float
) -> None:
    connection = await aio_pika.connect(url)
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    # Declared here too (idempotent), so the client never publishes to a missing queue.
    await channel.declare_queue(queue_name, durable=True, arguments=QUEUE_ARGUMENTS)
    pending: dict[str, asyncio.Future[AbstractIncomingMessage]] = {}

    async def on_reply(message: AbstractIncomingMessage) -> None:
        future = pending.pop(message.correlation_id or "", None)
        if future is not None and not future.done():
            future.set_result(message)

    replies = await channel.declare_queue(DIRECT_REPLY_TO, passive=True)
    await replies.consume(on_reply, no_ack=True)
    exchange = channel.default_exchange
    loop = asyncio.get_running_loop()
    protocol.emit("ready")
    window = Window(time.perf_counter() + warmup, duration)

    async def requester(index: int) -> None:
        username = f"bench-{index}"
        while time.perf_counter() < window.end:
            correlation_id = uuid.uuid4().hex
            future: asyncio.Future[AbstractIncomingMessage] = loop.create_future()
            pending[correlation_id] = future
            body = json.dumps(
                {"request_id": correlation_id, "username": username, "item_id": "bench-item"}
            ).encode()
            message = aio_pika.Message(
                body,
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=correlation_id,
                correlation_id=correlation_id,
                reply_to=DIRECT_REPLY_TO,
                headers={},
            )
            began = time.perf_counter_ns()
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT_S):
                    await exchange.publish(message, routing_key=queue_name, mandatory=True)
                    await future
                status, ok = "reply", True
            except Exception as exc:  # counted, never fatal: the run goes on
                status, ok = type(exc).__name__, False
            finally:
                pending.pop(correlation_id, None)
            window.record(time.perf_counter(), time.perf_counter_ns() - began, status, ok)

    await asyncio.gather(protocol.announce(window), *(requester(i) for i in range(concurrency)))
    protocol.emit("done", result=window.result().to_dict())
    await connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.baseline")
    parser.add_argument("role", choices=["server", "client"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--prefetch", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args()
    if args.role == "server":
        protocol.run(serve(args.url, args.queue, args.prefetch))
    else:
        protocol.run(drive(args.url, args.queue, args.concurrency, args.warmup, args.duration))


if __name__ == "__main__":
    main()
