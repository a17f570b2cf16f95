"""HTTP load: ``wrk`` when it is installed, else a lean built-in asyncio client.

The built-in client (``python -m bench.loadgen``) keeps one HTTP/1.1 keep-alive connection
per unit of concurrency, each sending ``POST /reservations`` back to back with a prebuilt
request (a different seeded user per connection, so no single row is a hot spot). It parses
only the status line and ``content-length``: the load generator should cost the CPU as little
as it can, since it shares the machine with what it measures.

wrk runs a Lua script (:data:`WRK_SCRIPT`) that spreads the requests over the same users,
counts statuses per thread and prints one JSON line when it is done.
"""

import argparse
import asyncio
import json
import shutil
import time
from pathlib import Path

from bench import protocol
from bench.stats import LoadResult, Window

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


# --- wrk ---------------------------------------------------------------------------------

WRK_SCRIPT = r"""
-- Spread requests over the seeded users; count statuses per thread; print JSON when done.
local users = tonumber(os.getenv("BENCH_USERS") or "64")
local item = os.getenv("BENCH_ITEM") or "bench-item"
local threads = {}
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  n = 0
  ok = 0
  bad = 0
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  n = n + 1
  local user = "bench-" .. ((id * 7919 + n) % users)
  local body = '{"username":"' .. user .. '","item_id":"' .. item .. '"}'
  return wrk.format("POST", wrk.path, nil, body)
end

function response(status, headers, body)
  if status == 201 then ok = ok + 1 else bad = bad + 1 end
end

function done(summary, latency, requests)
  local ok_total, bad_total = 0, 0
  for _, t in ipairs(threads) do
    ok_total = ok_total + t:get("ok")
    bad_total = bad_total + t:get("bad")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"ok":%d,"bad":%d,"duration_us":%d,'
      .. '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,'
      .. '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%f}\n',
    summary.requests, ok_total, bad_total, summary.duration,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
"""


def wrk_path() -> str | None:
    return shutil.which("wrk")


def wrk_command(url: str, script: Path, concurrency: int, seconds: float) -> list[str]:
    threads = min(2, concurrency)
    return [
        "wrk",
        f"-t{threads}",
        f"-c{concurrency}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        f"{int(REQUEST_TIMEOUT_S)}s",
        "-s",
        str(script),
        url,
    ]


def parse_wrk(output: str) -> LoadResult:
    for line in output.splitlines():
        if line.startswith("BENCH_JSON "):
            data = json.loads(line.removeprefix("BENCH_JSON "))
            break
    else:
        raise RuntimeError(f"wrk printed no result:\n{output[-2000:]}")
    socket_errors = data["connect"] + data["read"] + data["write"] + data["timeout"]
    statuses = {"201": data["ok"]}
    if data["bad"]:
        statuses["other"] = data["bad"]
    if socket_errors:
        statuses["socket_error"] = socket_errors
    return LoadResult(
        completed=data["ok"],
        errors=data["bad"] + socket_errors,
        elapsed_s=round(data["duration_us"] / 1e6, 3),
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
        mean_ms=round(data["mean_us"] / 1000, 3),
        statuses=statuses,
    )


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
