"""``python -m bench.twin.measure``: the twin alone, in a private vhost and a fresh database.

    python -m bench.twin.measure --db sqlite --connections 1,32 --seconds 5
    python -m bench.twin.measure --db postgres --variants untraced

Per variant: start the twin (and, traced, an OTLP receiver), load it with wrk (or the
built-in client) at each connection count, drain the queues, then check the database
(credits deducted == sum of confirmed prices, every confirmed reservation fulfilled) and,
traced, that no span was dropped. Markdown on stdout; ``--output`` writes JSON.
"""

import argparse
import asyncio
import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import broker, db
from bench.procstats import CpuMeter, find_broker_pid
from bench.twin import load, processes
from bench.twin.audit import Audit, audit
from bench.twin.launch import TRACED, VARIANTS, launch
from bench.twin.summary import markdown
from devtools.addresses import DEFAULT_POSTGRES_URL
from devtools.vhosts import local_rabbitmqctl, private_vhost
from messaging import topology

QUEUES = (topology.CREDIT_CHECK.name, topology.FULFILMENT.name)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.twin.measure")
    p.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--connections", default="1,32", help="comma-separated, e.g. 1,32")
    p.add_argument("--seconds", type=float, default=5.0, help="measured seconds per level")
    p.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per level")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument(
        "--amqp-url", default=os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    )
    p.add_argument(
        "--postgres-url", default=os.environ.get("TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    )
    p.add_argument("--output", type=Path, help="write the results here as JSON")
    p.add_argument("--keep-logs", type=Path, help="copy the processes' logs here")
    return p.parse_args(argv)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def measure(
    args: argparse.Namespace, variant: str, amqp_url: str, workdir: Path
) -> dict[str, Any]:
    database = await db.create(args.db, workdir, args.postgres_url)
    receiver = None
    running: list[processes.Running] = []
    try:
        endpoint = None
        if variant == TRACED:
            receiver = await load.start_receiver(workdir)
            endpoint = receiver.endpoint
        port = free_port()
        env = {**os.environ, "AMQP_URL": amqp_url, "SEED_FILE": str(db.write_seed(workdir))}
        specs = launch(variant, database.env(), env, port=port, otlp_endpoint=endpoint)
        running = await processes.start(specs, amqp_url, workdir)
        per_request = await load.calibrate(port, receiver) if receiver is not None else None
        pids = {p.spec.name: p.process.pid for p in running}
        if receiver is not None:
            pids["receiver"] = receiver.process.pid
        levels = []
        for connections in (int(c) for c in args.connections.split(",")):
            if args.warmup > 0:
                await load.http_load(port, connections, args.warmup, workdir)
            meter = CpuMeter({**pids, "broker": find_broker_pid()})
            meter.begin()
            result = await load.http_load(port, connections, args.seconds, workdir)
            cpu = meter.used()
            levels.append(
                {
                    "connections": connections,
                    **result.to_dict(),
                    "cpu_s": cpu,
                    "cpu_ms_per_request": {
                        role: round(1000 * s / max(1, result.completed), 3)
                        for role, s in cpu.items()
                    },
                }
            )
        drained = await broker.wait_drained(amqp_url, QUEUES, within=60)
        final = await _settled(database)
        spans = None
        if receiver is not None and per_request is not None:
            expected = final.confirmed * per_request
            received = await load.wait_for_spans(receiver, expected)
            spans = {
                "per_request": per_request,
                "expected": expected,
                "received": received,
                "dropped": max(0, expected - received),
                "queue_full_logged": sum(p.log().count("Queue full") for p in running),
            }
        return {
            "variant": variant,
            "db": args.db,
            "levels": levels,
            "queues_drained": drained,
            "audit": final.to_dict(),
            "spans": spans,
        }
    finally:
        await processes.stop(running)
        if receiver is not None:
            await receiver.stop()
        await database.drop()
        if args.keep_logs is not None:
            await asyncio.to_thread(_copy_logs, workdir, args.keep_logs / variant)


def _copy_logs(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for log in source.glob("*.log"):
        (target / log.name).write_bytes(log.read_bytes())


async def _settled(database: db.Database, within: float = 30) -> Audit:
    """The audit once every confirmed reservation is fulfilled and the counts stop moving."""
    deadline = time.monotonic() + within
    last = await audit(database)
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        now = await audit(database)
        if now == last and now.all_fulfilled:
            break
        last = now
    return last


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    ctl = local_rabbitmqctl(args.amqp_url)
    assert ctl is not None, "the twin bench needs rabbitmqctl on this machine"
    with private_vhost(args.amqp_url, ctl, "twin") as url:
        for variant in args.variants.split(","):
            with tempfile.TemporaryDirectory(prefix=f"twin-{variant}-") as tmp:
                results.append(await measure(args, variant, url, Path(tmp)))
    return results


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    results = asyncio.run(run(args))
    if args.output is not None:
        args.output.write_text(json.dumps(results, indent=2))
    print(markdown(results))


if __name__ == "__main__":
    main()
