"""The scenarios, each run at every concurrency level of the plan.

- ``baseline``: bare aio-pika request/reply (bench.baseline), no HTTP, no DB, no tracing.
- ``untraced``: the real API + credit-check worker (+ fulfilment worker) + database, driven
  over HTTP, with ``OTEL_SDK_DISABLED=true``.
- ``traced``: the same with the SDK on, 100% sampling (``parentbased_always_on``; the load
  sends no ``traceparent``, so every request is a sampled root), exporting OTLP/gRPC to a
  receiver process (bench.receiver) that counts what it accepts.
- ``traced-unreachable``: the same, exporting to a closed port.

Per level: warm-up, then a measured window with the CPU time of every process read at its
edges; then the queues drain and, when traced, the benchmark waits for the spans and checks
expected (spans per request × reservations recorded) against received.
"""

import asyncio
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench import broker, db, loadgen, services
from bench.procstats import CpuMeter, children_cpu_seconds
from bench.receiver import ReceiverClient
from bench.stats import LoadResult

BASELINE = "baseline"
UNTRACED = "untraced"
TRACED = "traced"
UNREACHABLE = "traced-unreachable"
SCENARIOS = (BASELINE, UNTRACED, TRACED, UNREACHABLE)

WORK_QUEUES = ("credit-check", "fulfilment")
QUEUE_FULL_LOG = "Queue full, dropping"  # BatchSpanProcessor (deduplicated per 20 s)
EXPORT_FAILED_LOG = "Failed to export"  # OTLP exporter, after its retries
CALIBRATION_REQUESTS = 20
# Log lines that mean the broker dropped the connections: someone restarted it (a test's
# ``rabbitmqctl stop_app``, say). A level that saw one measured an outage, not the system.
DISRUPTION_MARKERS = ("CONNECTION_FORCED", "Unexpected connection close", "AMQPConnectionError")

TRACING_OFF = {"OTEL_SDK_DISABLED": "true"}


def tracing_on(endpoint: str) -> dict[str, str]:
    return {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_TRACES_SAMPLER": "parentbased_always_on",
    }


def bsp_delay_s() -> float:
    return float(os.environ.get("OTEL_BSP_SCHEDULE_DELAY", "5000")) / 1000


@dataclass
class Plan:
    scenarios: list[str]
    levels: list[int]
    warmup: float
    duration: float
    db: str
    postgres_url: str
    amqp_url: str
    source_root: Path
    bench_root: Path
    loadgen: str  # "wrk" or "builtin"
    keep_logs: Path | None = None


@dataclass
class LevelResult:
    scenario: str
    concurrency: int
    load: LoadResult
    cpu_s: dict[str, float]  # CPU seconds per process role over the measured window
    spans: dict[str, Any] | None = None
    reservations: dict[str, int] = field(default_factory=dict)
    disrupted: int = 0  # broker-disconnect log lines seen during the level

    def cpu_s_per_request(self) -> dict[str, float]:
        n = max(1, self.load.completed)
        return {role: round(cpu / n, 7) for role, cpu in self.cpu_s.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "concurrency": self.concurrency,
            **self.load.to_dict(),
            "cpu_s": self.cpu_s,
            "cpu_s_per_request": self.cpu_s_per_request(),
            "spans": self.spans,
            "reservations": self.reservations,
            "broker_disrupted": self.disrupted,
        }


Say = Callable[[str], None]


async def run_scenario(
    plan: Plan, name: str, say: Say, done: Callable[[], None]
) -> list[LevelResult]:
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        workdir = Path(tmp)
        try:
            if name == BASELINE:
                return await _baseline(plan, workdir, say, done)
            return await _system(plan, name, workdir, say, done)
        finally:
            if plan.keep_logs is not None:
                await asyncio.to_thread(_copy_logs, workdir, plan.keep_logs / name)


def _copy_logs(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for log in source.glob("*.log"):
        (target / log.name).write_bytes(log.read_bytes())


async def _baseline(
    plan: Plan, workdir: Path, say: Say, done: Callable[[], None]
) -> list[LevelResult]:
    from bench.procstats import find_broker_pid

    queue = f"bench-baseline-{uuid.uuid4().hex[:8]}"
    env = services.bench_env(plan.bench_root)
    common = ["--url", plan.amqp_url, "--queue", queue]
    say("baseline: starting the server")
    server = await services.spawn(
        "baseline-server",
        ["bench.baseline", "server", *common],
        env=env,
        cwd=plan.bench_root,
        log_dir=workdir,
        events=True,
    )
    results = []
    try:
        await server.read_event("ready")
        for level in plan.levels:
            say(f"baseline @ {level}: measuring")
            client = await services.spawn(
                f"baseline-client-{level}",
                [
                    "bench.baseline",
                    "client",
                    *common,
                    f"--concurrency={level}",
                    f"--warmup={plan.warmup}",
                    f"--duration={plan.duration}",
                ],
                env=env,
                cwd=plan.bench_root,
                log_dir=workdir,
                events=True,
            )
            await client.read_event("ready")
            server.mark("level")
            meter = CpuMeter(
                {"client": client.pid, "server": server.pid, "broker": find_broker_pid()}
            )
            await client.read_event("start", plan.warmup + 30)
            meter.begin()
            await client.read_event("end", plan.duration + 30)
            cpu = meter.used()
            event = await client.read_event("done", 60)
            await client.process.wait()
            disrupted = sum(
                child.count_since("level", marker)
                for child in (client, server)
                for marker in DISRUPTION_MARKERS
            )
            load = LoadResult.from_dict(event["result"])
            results.append(LevelResult(BASELINE, level, load, cpu, disrupted=disrupted))
            done()
    finally:
        await server.stop()
    return results


async def _system(
    plan: Plan, name: str, workdir: Path, say: Say, done: Callable[[], None]
) -> list[LevelResult]:
    database = await db.create(plan.db, workdir, plan.postgres_url)
    receiver: ReceiverClient | None = None
    system: services.RunningSystem | None = None
    try:
        if name == TRACED:
            say(f"{name}: starting the OTLP receiver")
            receiver = await start_receiver(plan, workdir)
            tracing = tracing_on(receiver.endpoint)
        elif name == UNREACHABLE:
            tracing = tracing_on(f"http://127.0.0.1:{services.free_port()}")  # nothing listens
        else:
            tracing = TRACING_OFF
        env = services.service_env(
            plan.source_root,
            plan.amqp_url,
            tracing,
            {**database.env(), "SEED_FILE": str(db.write_seed(workdir))},
        )
        await db.migrate(plan.source_root, env, workdir)
        say(f"{name}: starting the services")
        system = await services.start_system(plan.source_root, plan.amqp_url, env, workdir)
        spans_per_request = None
        if receiver is not None:
            say(f"{name}: calibrating spans per request")
            spans_per_request = await calibrate(system.port, receiver)
        results = []
        for level in plan.levels:
            say(f"{name} @ {level}: measuring")
            results.append(
                await _system_level(
                    plan, name, level, system, database, receiver, spans_per_request, workdir, say
                )
            )
            done()
        return results
    finally:
        if system is not None:
            await system.stop()
        if receiver is not None:
            await receiver.stop()
        await database.drop()


async def _system_level(
    plan: Plan,
    name: str,
    level: int,
    system: services.RunningSystem,
    database: db.Database,
    receiver: ReceiverClient | None,
    spans_per_request: int | None,
    workdir: Path,
    say: Say,
) -> LevelResult:
    from bench.procstats import find_broker_pid

    before = sum((await database.outcomes()).values())
    received_before = await receiver.received() if receiver is not None else 0
    label = f"level-{level}"
    system.mark(label)
    meter = CpuMeter({**system.pids(), "broker": find_broker_pid()})
    if receiver is not None:
        meter.add("receiver", receiver.process.pid)
    load, cpu = await http_load(plan, system.port, level, meter, workdir)
    say(f"{name} @ {level}: draining the queues")
    drained = await broker.wait_drained(plan.amqp_url, WORK_QUEUES, within=60)
    outcomes = await settled_outcomes(database)
    recorded = sum(outcomes.values()) - before
    spans: dict[str, Any] | None = None
    if name in (TRACED, UNREACHABLE):
        spans = {
            "queue_full_logged": system.count_since(label, QUEUE_FULL_LOG),
            "export_failures_logged": system.count_since(label, EXPORT_FAILED_LOG),
        }
    if receiver is not None and spans_per_request is not None and spans is not None:
        say(f"{name} @ {level}: waiting for the spans")
        expected = recorded * spans_per_request
        received = await wait_for_spans(receiver, received_before + expected) - received_before
        spans |= {
            "per_request": spans_per_request,
            "expected": expected,
            "received": received,
            "dropped": max(0, expected - received),
        }
    return LevelResult(
        name,
        level,
        load,
        cpu,
        spans,
        {"recorded": recorded, "queues_drained": int(drained), **outcomes},
        disrupted=sum(system.count_since(label, m) for m in DISRUPTION_MARKERS),
    )


async def http_load(
    plan: Plan, port: int, level: int, meter: CpuMeter, workdir: Path
) -> tuple[LoadResult, dict[str, float]]:
    if plan.loadgen == "wrk":
        script = workdir / "bench.lua"
        script.write_text(loadgen.WRK_SCRIPT)
        url = f"http://127.0.0.1:{port}/reservations"
        env = {**os.environ, "BENCH_USERS": str(db.USERS), "BENCH_ITEM": db.ITEM_ID}
        await _run(loadgen.wrk_command(url, script, level, plan.warmup), env)
        meter.begin()
        children_before = children_cpu_seconds()
        output = await _run(loadgen.wrk_command(url, script, level, plan.duration), env)
        cpu = meter.used()
        cpu["loadgen"] = round(children_cpu_seconds() - children_before, 4)
        return loadgen.parse_wrk(output), cpu
    child = await services.spawn(
        f"loadgen-{level}",
        [
            "bench.loadgen",
            f"--port={port}",
            f"--concurrency={level}",
            f"--users={db.USERS}",
            f"--warmup={plan.warmup}",
            f"--duration={plan.duration}",
        ],
        env=services.bench_env(plan.bench_root),
        cwd=plan.bench_root,
        log_dir=workdir,
        events=True,
    )
    meter.add("loadgen", child.pid)
    await child.read_event("ready")
    await child.read_event("start", plan.warmup + 30)
    meter.begin()
    await child.read_event("end", plan.duration + 30)
    cpu = meter.used()
    event = await child.read_event("done", 60)
    await child.process.wait()
    return LoadResult.from_dict(event["result"]), cpu


async def _run(args: list[str], env: dict[str, str]) -> str:
    process = await asyncio.create_subprocess_exec(
        *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await process.communicate()
    text = output.decode(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"{args[0]} failed ({process.returncode}):\n{text[-2000:]}")
    return text


async def start_receiver(plan: Plan, workdir: Path) -> ReceiverClient:
    child = await services.spawn(
        "receiver",
        ["bench.receiver"],
        env=services.bench_env(plan.bench_root),
        cwd=plan.bench_root,
        log_dir=workdir,
        events=True,
        stdin=True,
    )
    ready = await child.read_event("ready")
    return ReceiverClient(child.process, int(ready["port"]))


async def calibrate(port: int, receiver: ReceiverClient) -> int:
    """Spans one confirmed reservation produces, counted per trace id on a few requests.

    Every calibration trace must end up with the same count: that is also a check that the
    whole request (API, worker, fulfilment) lands in one trace.
    """
    trace_ids = []
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        for i in range(CALIBRATION_REQUESTS):
            response = await client.post(
                "/reservations", json={"username": f"bench-{i}", "item_id": db.ITEM_ID}
            )
            if response.status_code != 201:
                raise RuntimeError(
                    f"calibration request got {response.status_code}: {response.text}"
                )
            trace_ids.append(response.headers["x-trace-id"])
    # The processes export at the latest one schedule delay after the last span ends.
    settle = time.monotonic() + bsp_delay_s() + 1.0
    deadline = settle + 20
    while True:
        await asyncio.sleep(0.25)
        counts = await receiver.trace_counts(trace_ids)
        values = set(counts.values())
        if time.monotonic() >= settle and len(values) == 1 and 0 not in values:
            return values.pop()
        if time.monotonic() > deadline:
            raise RuntimeError(f"traces did not settle to one span count per request: {counts}")


async def settled_outcomes(database: db.Database, within: float = 30) -> dict[str, int]:
    """Reservations by outcome once the count stops moving (prefetched deliveries finish)."""
    deadline = time.monotonic() + within
    last = await database.outcomes()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        now = await database.outcomes()
        if now == last:
            break
        last = now
    return last


async def wait_for_spans(receiver: ReceiverClient, target: int) -> int:
    """Wait until the receiver holds ``target`` spans, or one schedule delay + 10 s passed."""
    deadline = time.monotonic() + bsp_delay_s() + 10
    while True:
        received = await receiver.received()
        if received >= target or time.monotonic() > deadline:
            return received
        await asyncio.sleep(0.25)
