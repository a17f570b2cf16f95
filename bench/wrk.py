"""HTTP load with ``wrk``, when it is installed.

wrk runs a Lua script (:data:`WRK_SCRIPT`) that spreads the requests over the same users as
the built-in client (bench.loadgen), counts statuses per thread and prints one JSON line when
it is done; :func:`parse_wrk` turns that line into a LoadResult.
"""

import json
import shutil
from pathlib import Path

from bench.loadgen import REQUEST_TIMEOUT_S
from devtools.load_stats import LoadResult

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
