"""A small, bounded load generator for the local system: N reservations, C at a time.

Loopback only and capped, so it cannot be pointed at somebody else's server by accident."""

import asyncio
import time
from collections import Counter

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from cli.client import body_of, unreachable
from cli.errors import CliError
from cli.invocation import command
from cli.settings import is_loopback_url
from devtools.load_stats import LoadResult, summarize

MAX_REQUESTS = 100_000
MAX_CONCURRENCY = 256
ONE_CONNECTION = httpx.Limits(max_connections=1, max_keepalive_connections=1)


def check_limits(api_url: str, requests: int, concurrency: int) -> None:
    if not is_loopback_url(api_url):
        raise CliError(
            f"load refuses {api_url}: only a loopback API (127.0.0.1, localhost, ::1).",
            hint=f"run the system locally (`{command()} run`) and leave API_URL at its default.",
        )
    if not 1 <= requests <= MAX_REQUESTS or not 1 <= concurrency <= MAX_CONCURRENCY:
        raise CliError(f"-n must be 1..{MAX_REQUESTS} and -c 1..{MAX_CONCURRENCY}.")


async def run_load(
    api_url: str, requests: int, concurrency: int, username: str, item_id: str, console: Console
) -> LoadResult:
    """Each answer counts as completed, whatever its status (a 409 is an outcome too); a
    request that got no answer counts as an error."""
    outcomes: Counter[str] = Counter()
    latencies_ns: list[int] = []
    remaining = iter(range(requests))
    progress = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    # httpx's own TLS context, made once for every client: each client would build its own,
    # and that takes milliseconds.
    tls = httpx.create_ssl_context()
    async with httpx.AsyncClient(base_url=api_url, timeout=5, verify=tls) as probe:
        try:
            await probe.get("/readyz")
        except httpx.HTTPError as error:
            raise unreachable(api_url, error) from None
    task = progress.add_task("reserving", total=requests)

    async def worker() -> None:
        # A client, and so one keep-alive connection, per worker: httpx's pool looks over every
        # connection it holds for each request it sends (and asks the kernel whether each
        # socket is readable), which with one shared pool of 32 cost this process more CPU per
        # request than the system it loads.
        async with httpx.AsyncClient(
            base_url=api_url, limits=ONE_CONNECTION, timeout=30, verify=tls
        ) as client:
            for _ in remaining:  # shared iterator: each request is sent once
                began = time.perf_counter_ns()
                try:
                    response = await client.post(
                        "/reservations", json={"username": username, "item_id": item_id}
                    )
                except httpx.HTTPError as error:
                    outcomes[f"error {type(error).__name__}"] += 1
                else:
                    latencies_ns.append(time.perf_counter_ns() - began)
                    status = body_of(response).get("status", "")
                    outcomes[f"{response.status_code} {status}".strip()] += 1
                progress.advance(task)

    with progress:
        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(min(concurrency, requests))))
        elapsed = time.perf_counter() - began
    return summarize(
        latencies_ns, errors=requests - len(latencies_ns), elapsed_s=elapsed, statuses=outcomes
    )


def summary(result: LoadResult, concurrency: int) -> Table:
    table = Table(
        title=f"{result.requests} reservations, concurrency {min(concurrency, result.requests)}"
    )
    table.add_column("outcome")
    table.add_column("count", justify="right")
    for outcome, count in sorted(result.statuses.items()):
        table.add_row(outcome, str(count))
    table.add_section()
    throughput = result.requests / result.elapsed_s if result.elapsed_s else 0.0
    table.add_row("throughput", f"{throughput:.1f} req/s")
    table.add_row("elapsed", f"{result.elapsed_s:.2f} s")
    if result.completed:
        table.add_row("p50 latency", f"{result.p50_ms:.1f} ms")
        table.add_row("p99 latency", f"{result.p99_ms:.1f} ms")
        table.add_row("max latency", f"{result.max_ms:.1f} ms")
    return table
