"""What an HTTP scenario puts under load, started the same way whichever it is.

- ``system``: the real API, credit-check worker and fulfilment worker, from ``--source-root``,
  after ``store.migrate`` has created and seeded the tables.
- ``twin``: the lean twin (``bench/twin``), always from the bench's own checkout: it is the
  anchor the system is measured against, not the code under test.

Both read the same variables (``AMQP_URL``, ``DATABASE_URL``, ``DATABASE_SCHEMA``,
``SEED_FILE``, ``OTEL_*``), declare the same topology and write the same tables, so the rest of
a scenario (load, draining, span counting, the audit) does not need to know which one runs.
"""

from pathlib import Path

from bench import db, services
from bench.plan import ONLY_SPANS, TRACING_OFF, Plan, tracing_on
from bench.twin import TRACED, UNTRACED, launch
from devtools.addresses import free_port

SYSTEM = "system"
TWIN = "twin"


def tracing_env(mode: str, endpoint: str | None) -> dict[str, str]:
    """``off``; ``on`` to ``endpoint``; ``spans``: the same without log records and metrics;
    ``unreachable``: exporting to a port nothing listens on."""
    if mode == "off":
        return dict(TRACING_OFF)
    if mode == "unreachable":
        return tracing_on(f"http://127.0.0.1:{free_port()}")
    assert endpoint is not None, "tracing on needs the receiver's endpoint"
    return tracing_on(endpoint) | (ONLY_SPANS if mode == "spans" else {})


async def start_target(
    plan: Plan,
    target: str,
    mode: str,
    endpoint: str | None,
    database: db.Database,
    workdir: Path,
) -> services.RunningSystem:
    """Start ``target`` on ``database`` traced as ``mode`` says; return once it takes requests."""
    seed = {"SEED_FILE": str(db.write_seed(workdir))}
    if target == SYSTEM:
        env = services.service_env(
            plan.source_root, plan.amqp_url, tracing_env(mode, endpoint), database.env() | seed
        )
        await db.migrate(plan.source_root, env, workdir)
        return await services.start_system(plan.source_root, plan.amqp_url, env, workdir)
    if mode not in ("off", "on"):
        raise ValueError("the twin runs untraced or traced to the receiver only")
    base = services.service_env(plan.bench_root, plan.amqp_url, {}, seed)
    variant = TRACED if mode == "on" else UNTRACED
    specs = launch(variant, database.env(), base, port=free_port(), otlp_endpoint=endpoint)
    started = []
    try:
        for spec in specs:
            process = services.spawn(
                spec.name, spec.module_args, env=spec.env, cwd=spec.cwd, log_dir=workdir
            )
            started.append(process)
            if spec.queue is not None:
                await services.wait_consuming(process, plan.amqp_url, spec.queue)
            elif spec.port is not None:
                await services.wait_ready(process, spec.port)
    except BaseException:
        for process in reversed(started):
            await services.stop(process)
        raise
    worker, fulfilment, api = started
    assert specs[-1].port is not None
    return services.RunningSystem(api, worker, fulfilment, specs[-1].port)
