"""``python -m bench``: the system against its lean twin and a bare aio-pika loop, in one run.

    python -m bench                 # levels 1, 8, 32, 64; 10 s each; + spans-only, OTLP-unreachable
    python -m bench --quick         # levels 1 and 32, 4 s each
    python -m bench --db postgres   # PostgreSQL, a throwaway schema (system and twin alike)
    python -m bench --source-root /tmp/wt   # measure another checkout of the services

Markdown on stdout, progress on stderr, results in bench/results/local/<db>.json and .png
(git-ignored); ``python -m bench.publish`` copies them to the committed bench/results/.
"""

import argparse
import asyncio
import os
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from bench import plan as plans
from bench import plot, report, scenarios, wrk
from bench.meta import meta
from bench.publish import LOCAL
from devtools.addresses import DEFAULT_AMQP_URL, DEFAULT_POSTGRES_URL
from devtools.vhosts import local_rabbitmqctl, private_vhost
from messaging.connection import vhost_of

BENCH_ROOT = Path(__file__).resolve().parents[1]
# A scenario during which the broker dropped its connections is run again this many times.
RETRIES = 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="levels 1 and 32 only, short windows")
    p.add_argument(
        "--levels", help="comma-separated concurrency levels (default 1,8,32,64; 1 and 32 always)"
    )
    p.add_argument("--duration", type=float, help="measured seconds per level (10; quick 4)")
    p.add_argument("--warmup", type=float, help="warm-up seconds per level (2; quick 1)")
    p.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument(
        "--postgres-url", default=os.environ.get("TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    )
    p.add_argument("--amqp-url", default=os.environ.get("AMQP_URL", DEFAULT_AMQP_URL))
    p.add_argument(
        "--loadgen",
        choices=["auto", "wrk", "builtin"],
        default="auto",
        help="HTTP load generator: wrk if installed (auto), else the built-in asyncio client",
    )
    p.add_argument(
        "--unreachable",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also run traced with the OTLP endpoint unreachable (default: on, off with --quick;"
        " --scenarios overrides it)",
    )
    p.add_argument(
        "--spans-only",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also run traced exporting spans only, as the twin (default: on, off with --quick;"
        " --scenarios overrides it)",
    )
    p.add_argument("--scenarios", help=f"comma-separated subset of {','.join(plans.SCENARIOS)}")
    p.add_argument(
        "--source-root",
        type=Path,
        default=BENCH_ROOT,
        help="checkout whose packages (api/, workers/, messaging/, store/...) run as the services",
    )
    p.add_argument("--output", type=Path, default=LOCAL, help="where <name>.json/.png go")
    p.add_argument("--name", help="file name stem of the results (default: the --db)")
    p.add_argument("--keep-logs", type=Path, help="copy every process log here")
    p.add_argument("--no-plot", action="store_true")
    return p.parse_args(argv)


def make_plan(args: argparse.Namespace) -> plans.Plan:
    levels = [int(x) for x in args.levels.split(",")] if args.levels else None
    levels = levels or ([1, 32] if args.quick else [1, 8, 32, 64])
    levels = sorted({*levels, *plans.REQUIRED_LEVELS})
    unreachable = (not args.quick) if args.unreachable is None else args.unreachable
    spans_only = (not args.quick) if args.spans_only is None else args.spans_only
    names = (
        args.scenarios.split(",")
        if args.scenarios
        else [
            plans.BASELINE,
            plans.TWIN_UNTRACED,
            plans.UNTRACED,
            plans.TWIN_TRACED,
            plans.TRACED,
            *([plans.SPANS_ONLY] if spans_only else []),
            *([plans.UNREACHABLE] if unreachable else []),
        ]
    )
    unknown = set(names) - set(plans.SCENARIOS)
    if unknown:
        raise SystemExit(f"unknown scenarios: {', '.join(sorted(unknown))}")
    chosen = args.loadgen
    if chosen == "auto":
        chosen = "wrk" if wrk.wrk_path() else "builtin"
    elif chosen == "wrk" and not wrk.wrk_path():
        raise SystemExit("--loadgen wrk: wrk is not installed (apt-get install wrk)")
    return plans.Plan(
        scenarios=names,
        levels=levels,
        warmup=args.warmup if args.warmup is not None else (1.0 if args.quick else 2.0),
        duration=args.duration if args.duration is not None else (4.0 if args.quick else 10.0),
        db=args.db,
        postgres_url=args.postgres_url,
        amqp_url=args.amqp_url,
        source_root=args.source_root.resolve(),
        bench_root=BENCH_ROOT,
        loadgen=chosen,
        keep_logs=args.keep_logs,
    )


async def run(args: argparse.Namespace, plan: plans.Plan, vhost: str | None) -> dict[str, Any]:
    mode = "quick" if args.quick else "full"
    began = time.monotonic()
    info = meta(plan, mode, vhost)
    results = await measure(plan)
    info["wall_s"] = round(time.monotonic() - began, 1)
    data = report.build(results, info)
    name = args.name or plan.db
    report.write_json(data, args.output / f"{name}.json")
    if not args.no_plot:
        plot.plot(data, args.output / f"{name}.png")
    return data


async def measure(plan: plans.Plan) -> list[plans.LevelResult]:
    """Every scenario at every level, with progress on stderr."""
    results: list[plans.LevelResult] = []
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=False,
    ) as progress:
        task = progress.add_task("starting", total=len(plan.scenarios) * len(plan.levels))

        def say(text: str) -> None:
            progress.update(task, description=text)

        def done() -> None:
            progress.advance(task)

        for name in plan.scenarios:
            for attempt in range(1 + RETRIES):
                level_results = await scenarios.run_scenario(plan, name, say, done)
                if attempt == RETRIES or not any(r.disrupted for r in level_results):
                    break
                progress.console.print(
                    f"[yellow]{name}: the broker dropped the connections during the run "
                    "(restarted by someone else?); running the scenario again"
                )
                progress.update(task, total=(progress.tasks[0].total or 0) + len(plan.levels))
            results.extend(level_results)
            for r in level_results:
                progress.console.print(
                    f"{name:>25} @ {r.concurrency:>2}: {r.load.throughput:8.1f} req/s  "
                    f"p99 {r.load.p99_ms:7.2f} ms  errors {r.load.errors}"
                    + report.spans_note(r.spans)
                )
        say("done")
    return results


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    plan = make_plan(args)
    with ExitStack() as stack:
        # A vhost of its own when rabbitmqctl can make one; else the configured one, shared.
        ctl = local_rabbitmqctl(plan.amqp_url)
        vhost = None
        if ctl is not None:
            plan.amqp_url = stack.enter_context(private_vhost(plan.amqp_url, ctl, "bench"))
            vhost = vhost_of(plan.amqp_url)
        data = asyncio.run(run(args, plan, vhost))
    sys.stdout.write(report.markdown(data))


if __name__ == "__main__":
    main()
