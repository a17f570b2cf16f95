"""A small, bounded load generator for the local system: N reservations, C at a time.

Loopback only and capped, so it cannot be pointed at somebody else's server by accident."""

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from cli.client import body_of
from cli.errors import CliError
from cli.settings import is_loopback_url

MAX_REQUESTS = 100_000
MAX_CONCURRENCY = 256


@dataclass
class LoadResult:
    outcomes: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)  # seconds, successful answers only
    elapsed: float = 0.0

    @property
    def throughput(self) -> float:
        return sum(self.outcomes.values()) / self.elapsed if self.elapsed else 0.0


def check_limits(api_url: str, requests: int, concurrency: int) -> None:
    if not is_loopback_url(api_url):
        raise CliError(
            f"load refuses {api_url}: only a loopback API (127.0.0.1, localhost, ::1).",
            hint="run the system locally (`reservations run`) and leave API_URL at its default.",
        )
    if not 1 <= requests <= MAX_REQUESTS or not 1 <= concurrency <= MAX_CONCURRENCY:
        raise CliError(f"-n must be 1..{MAX_REQUESTS} and -c 1..{MAX_CONCURRENCY}.")


async def run_load(
    api_url: str, requests: int, concurrency: int, username: str, item_id: str, console: Console
) -> LoadResult:
    result = LoadResult()
    remaining = iter(range(requests))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    progress = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    async with httpx.AsyncClient(base_url=api_url, limits=limits, timeout=30) as client:
        try:
            await client.get("/readyz")
        except httpx.HTTPError as error:
            raise CliError(f"the API is not reachable at {api_url} ({error}).") from None
        task = progress.add_task("reserving", total=requests)

        async def worker() -> None:
            for _ in remaining:  # shared iterator: each request is sent once
                began = time.perf_counter()
                try:
                    response = await client.post(
                        "/reservations", json={"username": username, "item_id": item_id}
                    )
                except httpx.HTTPError as error:
                    result.outcomes[f"error {type(error).__name__}"] += 1
                else:
                    result.latencies.append(time.perf_counter() - began)
                    status = body_of(response).get("status", "")
                    result.outcomes[f"{response.status_code} {status}".strip()] += 1
                progress.advance(task)

        with progress:
            began = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(min(concurrency, requests))))
            result.elapsed = time.perf_counter() - began
    return result


def percentile(values: list[float], q: int) -> float:
    """Nearest-rank percentile: an observed latency, never an interpolated one."""
    ordered = sorted(values)
    rank = -(-q * len(ordered) // 100)  # ceil(q% of n)
    return ordered[max(1, min(rank, len(ordered))) - 1]


def summary(result: LoadResult, concurrency: int) -> Table:
    table = Table(title=f"{sum(result.outcomes.values())} reservations, concurrency {concurrency}")
    table.add_column("outcome")
    table.add_column("count", justify="right")
    for outcome, count in sorted(result.outcomes.items()):
        table.add_row(outcome, str(count))
    table.add_section()
    table.add_row("throughput", f"{result.throughput:.1f} req/s")
    table.add_row("elapsed", f"{result.elapsed:.2f} s")
    if result.latencies:
        for q in (50, 99):
            table.add_row(f"p{q} latency", f"{percentile(result.latencies, q) * 1000:.1f} ms")
        table.add_row("max latency", f"{max(result.latencies) * 1000:.1f} ms")
    return table
