"""The system scenarios: the real API and workers with a fresh database, untraced, traced to a
receiver that counts spans, or traced to a closed port.

Per level: a measured window with the CPU time of every process read at its edges; then the
queues drain and, when traced, the benchmark waits for the spans and checks expected (spans
per request × reservations recorded) against received.
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import broker, db, protocol, services
from bench.http_load import http_load
from bench.plan import (
    DISRUPTION_MARKERS,
    EXPORT_FAILED_LOG,
    QUEUE_FULL_LOG,
    TRACED,
    TRACING_OFF,
    UNREACHABLE,
    WORK_QUEUES,
    LevelResult,
    Plan,
    Say,
    tracing_on,
)
from bench.procstats import CpuMeter, find_broker_pid
from bench.receiver import ReceiverClient
from bench.span_counts import calibrate, wait_for_spans
from devtools.addresses import free_port


async def run_system(
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
            tracing = tracing_on(f"http://127.0.0.1:{free_port()}")  # nothing listens
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
                await _level(
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


async def _level(
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
    before = sum((await database.outcomes()).values())
    received_before = await receiver.received() if receiver is not None else 0
    offsets = system.log_offsets()
    meter = CpuMeter({**system.pids(), "broker": find_broker_pid()})
    if receiver is not None:
        meter.add("receiver", receiver.process.pid)
    load, cpu = await http_load(plan, system.port, level, meter, workdir)
    say(f"{name} @ {level}: draining the queues")
    drained = await broker.wait_drained(plan.amqp_url, WORK_QUEUES, within=60)
    outcomes = await database.settled_outcomes()
    recorded = sum(outcomes.values()) - before
    spans: dict[str, Any] | None = None
    if name in (TRACED, UNREACHABLE):
        spans = {
            "queue_full_logged": system.count_since(offsets, QUEUE_FULL_LOG),
            "export_failures_logged": system.count_since(offsets, EXPORT_FAILED_LOG),
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
        disrupted=sum(system.count_since(offsets, m) for m in DISRUPTION_MARKERS),
    )


async def start_receiver(plan: Plan, workdir: Path) -> ReceiverClient:
    process = services.spawn_helper(
        "receiver", ["bench.receiver"], plan.bench_root, workdir, stdin=True
    )
    ready = await protocol.read_event(process, "ready")
    return ReceiverClient(process, int(ready["port"]))
