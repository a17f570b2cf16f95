"""An OTLP/gRPC receiver in its own process that counts the spans it accepts.

``python -m bench.receiver`` runs ``cli.collector.OtlpReceiver`` (keeping the newest
traces in memory, nothing on disk), prints ``{"event": "ready", "port": N}`` and then
answers one JSON line per command read from stdin:

- ``count``: ``{"received": spans, "logs": log records, "points": metric points}``;
- ``traces ID,ID,...``: ``{"counts": {id: spans}}`` for those trace ids.

It accepts log records and metrics as well as spans, as Tempo's collector would, so the
services pay the real cost of exporting all three signals. It runs in a separate process so
that its gRPC server and protobuf decoding are not charged to the benchmark or the services,
and its CPU time is reported on its own.
"""

import asyncio
import json
import subprocess
import sys
from dataclasses import dataclass

from bench import protocol
from cli.collector import OtlpReceiver, SpanStore
from devtools.processes import Process

# Enough for the calibration traces, which are the newest when they are counted.
KEPT_TRACES = 100


def serve() -> None:
    store = SpanStore(max_traces=KEPT_TRACES)
    receiver = OtlpReceiver(store, port=0).start()
    protocol.emit("ready", port=receiver.port)
    for line in sys.stdin:
        command, _, argument = line.strip().partition(" ")
        if command == "count":
            answer: dict[str, object] = {
                "received": store.received,
                "logs": receiver.logs.received,
                "points": receiver.metrics.points,
            }
        elif command == "traces":
            answer = {"counts": store.counts(i for i in argument.split(",") if i)}
        else:
            answer = {"error": f"unknown command {command!r}"}
        print(json.dumps(answer), flush=True)
    receiver.stop()


@dataclass
class ReceiverClient:
    """The benchmark's handle on a running receiver process."""

    process: Process
    port: int

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _ask(self, command: str) -> dict[str, object]:
        popen = self.process.popen
        assert popen.stdin is not None and popen.stdout is not None
        stdin, stdout = popen.stdin, popen.stdout

        def ask() -> dict[str, object]:
            stdin.write(command.encode() + b"\n")
            stdin.flush()
            answer: dict[str, object] = json.loads(stdout.readline())
            return answer

        return await asyncio.to_thread(ask)

    async def received(self) -> int:
        value = (await self._ask("count"))["received"]
        assert isinstance(value, int)
        return value

    async def trace_counts(self, trace_ids: list[str]) -> dict[str, int]:
        counts = (await self._ask("traces " + ",".join(trace_ids)))["counts"]
        assert isinstance(counts, dict)
        return {str(k): int(v) for k, v in counts.items()}

    async def stop(self) -> None:
        """Closing stdin ends the command loop; SIGKILL if that takes over 10 s."""
        popen = self.process.popen
        if popen.stdin is not None:
            popen.stdin.close()
        try:
            await asyncio.to_thread(popen.wait, 10)
        except subprocess.TimeoutExpired:
            self.process.kill()


if __name__ == "__main__":
    serve()
