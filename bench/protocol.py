"""How a load process talks to the benchmark: one JSON object per stdout line.

``ready`` once set up, ``start`` and ``end`` at the edges of the measured window (the
benchmark reads each process's CPU time there), then ``done`` with the result.
"""

import asyncio
import json
import time
from typing import Any

from bench.window import Window
from devtools.processes import Process


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def parse(line: bytes | str) -> dict[str, Any] | None:
    """The event on a line, or None if the line is not one of ours."""
    try:
        data = json.loads(line)
    except ValueError:
        return None
    return data if isinstance(data, dict) and "event" in data else None


async def read_event(process: Process, expected: str, within: float = 60) -> dict[str, Any]:
    """Read ``process``'s stdout until the ``expected`` event (in a thread: a pipe read
    blocks). Raises RuntimeError if it exits first, TimeoutError after ``within`` seconds."""

    def read() -> dict[str, Any]:
        assert process.popen.stdout is not None
        for line in process.popen.stdout:
            event = parse(line)
            if event is not None and event["event"] == expected:
                return event
        raise RuntimeError(f"{process.name} exited before {expected!r}:\n{process.log()}")

    return await asyncio.wait_for(asyncio.to_thread(read), within)


async def announce(window: Window) -> None:
    """Emit ``start`` and ``end`` when the window opens and closes."""
    await asyncio.sleep(max(0.0, window.start - time.perf_counter()))
    emit("start")
    await asyncio.sleep(max(0.0, window.end - time.perf_counter()))
    emit("end")


def run(main: Any) -> None:
    """Run a coroutine on uvloop (as the services do) when it is installed."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(main)
    else:
        uvloop.run(main)
