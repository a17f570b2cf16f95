"""``python -m bench.store_profile``: CPU per transaction of the store alone, in one process.

    python -m bench.store_profile --db sqlite            # untraced (NoOp provider)
    python -m bench.store_profile --db sqlite --traced   # SDK spans, OTLP-encoded, not sent

A fresh database (SQLite file or PostgreSQL schema, removed at the end), migrated and seeded
with one rich user; then ``SqlStore.reserve`` and ``SqlStore.prepare_download`` for ``--count``
reservations, ``--concurrency`` at a time, with this process's CPU time read around each.
Traced, every span goes through a batch processor to an exporter that encodes it as OTLP
protobuf and drops it: the tracing cost without a receiver.
The database server's CPU is not counted.
"""

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import NoOpTracerProvider
from pydantic import SecretStr

from bench.db import Database
from devtools.addresses import DEFAULT_POSTGRES_URL
from messaging.telemetry.db_spans import instrument_engine
from store.engine import open_engine
from store.migrate import migrate
from store.repository import SqlStore
from store.settings import StoreSettings


class EncodingExporter(SpanExporter):
    """Encodes each batch as OTLP/protobuf, counts the spans, sends nothing."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        encode_spans(spans).SerializeToString()
        self.spans += len(spans)
        return SpanExportResult.SUCCESS


async def _timed(calls: list[Callable[[], Awaitable[object]]], concurrency: int) -> float:
    """CPU milliseconds of this process per call."""
    gate = asyncio.Semaphore(concurrency)

    async def one(call: Callable[[], Awaitable[object]]) -> None:
        async with gate:
            assert await call() is not None

    started = time.process_time()
    await asyncio.gather(*(one(call) for call in calls))
    return 1000 * (time.process_time() - started) / len(calls)


async def profile(args: argparse.Namespace) -> dict[str, float]:
    """One profile in a temporary directory (and, on PostgreSQL, a schema) that it removes."""
    with tempfile.TemporaryDirectory(prefix="store-profile-") as workdir:
        if args.db == "sqlite":
            return await _profile(args, Path(workdir), schema=None)
        schema = f"profile_{uuid.uuid4().hex[:8]}"
        database = Database("postgres", args.postgres_url, schema=schema)
        try:
            return await _profile(args, Path(workdir), schema)
        finally:
            await database.drop()


async def _profile(args: argparse.Namespace, workdir: Path, schema: str | None) -> dict[str, float]:
    seed = workdir / "seed.json"
    seed.write_text(json.dumps({"users": {"bench": 900_000_000}, "items": {"book-1": 1}}))
    url = f"sqlite+aiosqlite:///{workdir}/store.db" if schema is None else args.postgres_url
    settings = StoreSettings(database_url=SecretStr(url), database_schema=schema, seed_file=seed)
    await migrate(settings)
    exporter = EncodingExporter()
    provider: TracerProvider | NoOpTracerProvider = NoOpTracerProvider()
    if args.traced:
        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(exporter))
    engine = await open_engine(settings)
    spans = instrument_engine(engine, provider)
    try:
        store = SqlStore(engine, spans)
        ids = [uuid.uuid4() for _ in range(args.count)]
        warm_up = [partial(store.reserve, uuid.uuid4(), "bench", "book-1") for _ in range(100)]
        await _timed(list(warm_up), 32)
        reserves = [partial(store.reserve, i, "bench", "book-1") for i in ids]
        downloads = [partial(store.prepare_download, i, f"t{i.hex}") for i in ids]
        result = {
            "reserve_cpu_ms": await _timed(list(reserves), args.concurrency),
            "prepare_download_cpu_ms": await _timed(list(downloads), args.concurrency),
        }
    finally:
        await engine.dispose()
    if isinstance(provider, TracerProvider):
        provider.shutdown()
        result["spans_per_transaction"] = exporter.spans / (2 * args.count + 100)
    return {key: round(value, 3) for key, value in result.items()}


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.store_profile")
    p.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    p.add_argument("--traced", action="store_true")
    p.add_argument("--count", type=int, default=3000)
    p.add_argument("--concurrency", type=int, default=32)
    args = p.parse_args()
    print(json.dumps({"db": args.db, "traced": args.traced, **asyncio.run(profile(args))}))  # noqa: T201


if __name__ == "__main__":
    main()
