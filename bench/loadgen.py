"""The built-in HTTP load generator, used when ``wrk`` is not installed (bench.wrk).

The built-in client (``python -m bench.loadgen``) keeps one HTTP/1.1 keep-alive connection
per unit of concurrency, each sending ``POST /reservations`` back to back with a prebuilt
request (a different seeded user per connection, so no single row is a hot spot). It parses
only the status line and ``content-length``: the load generator should cost the CPU as little
as it can, since it shares the machine with what it measures.
"""

import argparse
import asyncio
import json
import time

from bench import protocol
from bench.window import Window

REQUEST_TIMEOUT_S = 10.0
EXPECTED_STATUS = 201
ITEM_ID = "bench-item"


def request_bytes(host: str, port: int, path: str, username: str) -> bytes:
    body = json.dumps({"username": username, "item_id": ITEM_ID}).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    raise ValueError("response without content-length")


async def connection_loop(host: str, port: int, path: str, username: str, window: Window) -> None:
    request = request_bytes(host, port, path, username)
    writer: asyncio.StreamWriter | None = None
    while time.perf_counter() < window.end:
        began = time.perf_counter_ns()
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port)
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                await reader.readexactly(content_length(head))
        except Exception as exc:  # a reset or a timeout: count it, reconnect, go on
            if writer is not None:
                writer.close()
                writer = None
            window.record(time.perf_counter(), 0, type(exc).__name__, False)
            await asyncio.sleep(0.01)
            continue
        ok = status == EXPECTED_STATUS
        window.record(time.perf_counter(), time.perf_counter_ns() - began, str(status), ok)
    if writer is not None:
        writer.close()


async def drive(
    host: str, port: int, path: str, concurrency: int, users: int, warmup: float, duration: float
) -> None:
    protocol.emit("ready")
    window = Window(time.perf_counter() + warmup, duration)
    await asyncio.gather(
        protocol.announce(window),
        *(
            connection_loop(host, port, path, f"bench-{i % users}", window)
            for i in range(concurrency)
        ),
    )
    protocol.emit("done", result=window.result().to_dict())


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/reservations")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--users", type=int, default=64)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args()
    protocol.run(
        drive(
            args.host,
            args.port,
            args.path,
            args.concurrency,
            args.users,
            args.warmup,
            args.duration,
        )
    )


if __name__ == "__main__":
    main()
