"""An OTLP/gRPC receiver in its own process that counts the spans it accepts.

``python -m bench.receiver`` reuses ``cli.collector.OtlpReceiver`` with a store that keeps
counts instead of spans (total, and per trace id), prints ``{"event": "ready", "port": N}``
and then answers one JSON line per command read from stdin:

- ``count``: ``{"received": total}``;
- ``traces ID,ID,...``: ``{"counts": {id: spans}}`` for those trace ids.

It runs in a separate process so that its gRPC server and protobuf decoding are not charged
to the benchmark or the services, and its CPU time is reported on its own.
"""

import asyncio
import json
import sys
from collections import Counter
from dataclasses import dataclass

from cli.collector import OtlpReceiver, SpanStore
from cli.spans import SpanRecord


class CountingStore(SpanStore):
    """A SpanStore that only counts: the benchmark needs totals, not the spans."""

    def __init__(self) -> None:
        super().__init__(max_traces=1)
        self.per_trace: Counter[str] = Counter()

    def add(self, spans: list[SpanRecord]) -> None:
        with self._lock:
            self.received += len(spans)
            self.per_trace.update(span.trace_id for span in spans)


def serve() -> None:
    store = CountingStore()
    receiver = OtlpReceiver(store, port=0).start()
    print(json.dumps({"event": "ready", "port": receiver.port}), flush=True)
    for line in sys.stdin:
        command, _, argument = line.strip().partition(" ")
        with store._lock:
            if command == "count":
                answer: dict[str, object] = {"received": store.received}
            elif command == "traces":
                ids = [i for i in argument.split(",") if i]
                answer = {"counts": {i: store.per_trace.get(i, 0) for i in ids}}
            else:
                answer = {"error": f"unknown command {command!r}"}
        print(json.dumps(answer), flush=True)
    receiver.stop()


@dataclass
class ReceiverClient:
    """The benchmark's handle on a running receiver process."""

    process: asyncio.subprocess.Process
    port: int

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _ask(self, command: str) -> dict[str, object]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(command.encode() + b"\n")
        await self.process.stdin.drain()
        answer: dict[str, object] = json.loads(await self.process.stdout.readline())
        return answer

    async def received(self) -> int:
        value = (await self._ask("count"))["received"]
        assert isinstance(value, int)
        return value

    async def trace_counts(self, trace_ids: list[str]) -> dict[str, int]:
        counts = (await self._ask("traces " + ",".join(trace_ids)))["counts"]
        assert isinstance(counts, dict)
        return {str(k): int(v) for k, v in counts.items()}

    async def stop(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), 10)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


if __name__ == "__main__":
    serve()
