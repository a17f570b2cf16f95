"""The HTTP scenarios: the system or its lean twin (``bench.targets``) with a fresh database,
untraced, traced to a receiver that counts spans, or (the system) traced to a closed port.

Per level: a measured window with the CPU time of every process read at its edges; then the
queues drain, the database is audited (credits conserved, every confirmation fulfilled) and,
when traced, the benchmark waits for the spans and checks expected (spans per request ×
reservations recorded) against received.
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import broker, db, protocol, services
from bench.audit import settled_audit
from bench.http_load import http_load
from bench.plan import (
    DISRUPTION_MARKERS,
    EXPORT_FAILED_LOG,
    QUEUE_FULL_LOG,
    RECEIVED,
    TARGETS,
    WORK_QUEUES,
    LevelResult,
    Plan,
    Say,
)
from bench.procstats import CpuMeter, find_broker_pid
from bench.receiver import ReceiverClient
from bench.span_counts import calibrate, wait_for_spans
from bench.targets import start_target


async def run_system(
    plan: Plan, name: str, workdir: Path, say: Say, done: Callable[[], None]
) -> list[LevelResult]:
    target, mode = TARGETS[name]
    database = await db.create(plan.db, workdir, plan.postgres_url)
    receiver: ReceiverClient | None = None
    system: services.RunningSystem | None = None
    try:
        if mode in RECEIVED:
            say(f"{name}: starting the OTLP receiver")
            receiver = await start_receiver(plan, workdir)
        say(f"{name}: starting the {target}")
        endpoint = receiver.endpoint if receiver is not None else None
        system = await start_target(plan, target, mode, endpoint, database, workdir)
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
    rss = meter.resident_mib()
    say(f"{name} @ {level}: draining the queues")
    drained = await broker.wait_drained(plan.amqp_url, WORK_QUEUES, within=60)
    outcomes = await database.settled_outcomes()
    recorded = sum(outcomes.values()) - before
    audit = await settled_audit(database)
    spans: dict[str, Any] | None = None
    if TARGETS[name][1] != "off":
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
        audit=audit.to_dict(),
        disrupted=sum(system.count_since(offsets, m) for m in DISRUPTION_MARKERS),
        rss_mib=rss,
    )


async def start_receiver(plan: Plan, workdir: Path) -> ReceiverClient:
    process = services.spawn_helper(
        "receiver", ["bench.receiver"], plan.bench_root, workdir, stdin=True
    )
    ready = await protocol.read_event(process, "ready")
    return ReceiverClient(process, int(ready["port"]))
