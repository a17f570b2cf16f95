"""``reservations``: the typer app. Wiring only: each command's work lives in its own module."""

import asyncio
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from pydantic import SecretStr, ValidationError
from rich.console import Console

from cli import reservations
from cli.errors import CliError, reporting_errors
from cli.last_reservation import last_reservation
from cli.log_store import read_trace_logs
from cli.settings import CliSettings
from cli.tempo import TempoClient, normalize_trace_id
from cli.trace_lookup import Source, find_trace, incomplete_note, whole
from cli.waterfall import Waterfall
from domain.credits import MAX_TOP_UP
from messaging.settings import BrokerSettings
from service.settings_check import CONFIGURATION, InvalidSettings, check, describe
from store.settings import StoreSettings

app = typer.Typer(
    help="Run the reservation system locally and see one request's trace across RabbitMQ.",
    no_args_is_help=True,
    add_completion=False,
)
# Piped (CI, `make demo | tee`): wide enough for a waterfall, unless COLUMNS says otherwise.
_WIDTH = None if sys.stdout.isatty() or "COLUMNS" in os.environ else 150
console = Console(width=_WIDTH)
err = Console(stderr=True, soft_wrap=True)

DataDir = Annotated[
    Path | None,
    typer.Option(help="Traces (and the SQLite file) go here. [env: RESERVATIONS_DATA_DIR]"),
]
OtlpEndpoint = Annotated[
    str | None,
    typer.Option(
        help="Send traces there; no embedded collector. [env: OTEL_EXPORTER_OTLP_ENDPOINT]"
    ),
]
IdempotencyKey = Annotated[str | None, typer.Option(help=reservations.IDEMPOTENCY_KEY_HELP)]
CollectorPort = Annotated[
    int | None,
    typer.Option(help="Embedded collector port (4317). [env: RESERVATIONS_COLLECTOR_PORT]"),
]


def settings(
    data_dir: Path | None = None,
    otlp_endpoint: str | None = None,
    collector_port: int | None = None,
    *,
    services: bool = False,
) -> CliSettings:
    """The environment's settings, with the options the user gave on top; with ``services``
    (a command that starts them, migrates or peeks), the broker's and the database's URLs
    too, as the services read them: one they cannot use is one line here, not a traceback
    from the connection (aio-pika retried a URL without a host for ever). Not for the others:
    `reset`, say, must not be stopped by a setting it does not use."""
    update = {
        "data_dir": data_dir,
        "otel_exporter_otlp_endpoint": otlp_endpoint,
        "collector_port": collector_port,
    }
    try:
        from_environment = CliSettings()
    except ValidationError as exc:
        raise CliError(describe(exc), f"see {CONFIGURATION}") from None
    if services:
        try:
            check_services(from_environment)
        except InvalidSettings as exc:
            raise CliError(str(exc), f"see {CONFIGURATION}") from None
    return from_environment.model_copy(update={k: v for k, v in update.items() if v is not None})


def check_services(cli: CliSettings) -> None:
    """What the services would refuse of their settings, as the CLI starts them (the URLs and
    the API's address it gives them, the rest from the environment): every one, here, in one
    InvalidSettings, before anything starts (a `LOG_LEVEL=foo` started all three, and each
    died)."""
    # Lazily: the workers' module loads the broker and database clients.
    from api.settings import ApiSettings
    from messaging.telemetry.logs import LogSettings
    from workers.runtime import WorkerSettings

    check(
        lambda: LogSettings(log_format="console"),
        lambda: BrokerSettings(amqp_url=SecretStr(cli.amqp_url)),
        lambda: StoreSettings(database_url=SecretStr(cli.children_database_url())),
        lambda: ApiSettings(api_host="127.0.0.1", api_port=cli.api_port),
        WorkerSettings,
    )


@app.command()
def run(
    data_dir: DataDir = None,
    otlp_endpoint: OtlpEndpoint = None,
    collector_port: CollectorPort = None,
) -> None:
    """Start the API and both workers, logs interleaved, until Ctrl-C."""
    from cli import run as run_flow  # lazily: gRPC and the collector load only where needed

    with reporting_errors(err):
        run_flow.run(settings(data_dir, otlp_endpoint, collector_port, services=True), console)


@app.command()
def collector(data_dir: DataDir = None, collector_port: CollectorPort = None) -> None:
    """Only the embedded trace collector, for services run by hand, until Ctrl-C."""
    from cli import embedded_collector

    with reporting_errors(err):
        embedded_collector.serve(settings(data_dir, None, collector_port), console)


@app.command()
def migrate(data_dir: DataDir = None) -> None:
    """Create or upgrade the database's tables and seed it (`run` and `demo` do this first)."""
    from cli.migration import migrate_database

    with reporting_errors(err):
        migrate_database(settings(data_dir=data_dir, services=True), console)


@app.command()
def demo(
    data_dir: DataDir = None,
    otlp_endpoint: OtlpEndpoint = None,
    collector_port: CollectorPort = None,
    exit_after: Annotated[
        bool, typer.Option("--exit", envvar="DEMO_EXIT", help="Stop after the waterfall (CI).")
    ] = False,
) -> None:
    """`run`, then reserve twice and show the confirmed reservation's whole trace."""
    from cli import demo as demo_flow

    with reporting_errors(err):
        demo_flow.demo(
            settings(data_dir, otlp_endpoint, collector_port, services=True), console, exit_after
        )


@app.command()
def reserve(user: str, item: str, idempotency_key: IdempotencyKey = None) -> None:
    """Reserve ITEM for USER; prints the outcome and the trace id."""
    with reporting_errors(err):
        reservations.reserve(settings(), user, item, console, idempotency_key)


@app.command()
def trace(
    trace_id: Annotated[str | None, typer.Argument(help=reservations.TRACE_ARGUMENT)] = None,
    last: Annotated[
        bool, typer.Option("--last", help="The newest reservation's trace in the collector.")
    ] = False,
    source: Annotated[Source, typer.Option(help="Where to read the trace.")] = Source.auto,
    attrs: Annotated[bool, typer.Option("--attrs", help="Show span attributes.")] = False,
    logs: Annotated[
        bool, typer.Option("--logs/--no-logs", help="Log lines under their spans (collector).")
    ] = True,
    wait: Annotated[float, typer.Option(help="Seconds to wait for the trace to complete.")] = 5.0,
    data_dir: DataDir = None,
) -> None:
    """Show a trace as a waterfall: span tree, services, kinds, durations on one time axis,
    and each log line under the span that wrote it."""
    with reporting_errors(err):
        cfg = settings(data_dir)
        if last:
            found = last_reservation(cfg.data_dir)
            err.print(found.note, style="yellow" if found.stale else "dim", highlight=False)
            # Found in the collector's file: read from there, unless --source says otherwise.
            trace_id = found.trace_id
            source = Source.collector if source is Source.auto else source
        elif trace_id is None:
            raise typer.BadParameter("give a TRACE_ID or --last")
        else:
            trace_id = reservations.trace_of(cfg, trace_id)
        trace_id = normalize_trace_id(trace_id)
        tempo = TempoClient(cfg.tempo_url)
        spans = find_trace(trace_id, source, cfg.data_dir, tempo, wait, complete=whole)
        lines = read_trace_logs(cfg.data_dir, trace_id) if logs else []
        console.print(Waterfall(spans, show_attributes=attrs, logs=lines))
        if note := incomplete_note(spans):
            err.print(note, style="yellow", highlight=False)


@app.command()
def load(
    user: Annotated[str, typer.Argument()] = "alice",
    item: Annotated[str, typer.Argument()] = "book-1",
    requests: Annotated[int, typer.Option("-n", help="How many reservations.")] = 100,
    concurrency: Annotated[int, typer.Option("-c", help="How many at a time.")] = 10,
) -> None:
    """Send N reservations, C at a time, to the local API; outcomes, throughput, p50/p99."""
    from cli import load as load_flow

    with reporting_errors(err):
        api_url = settings().api_url
        load_flow.check_limits(api_url, requests, concurrency)
        result = asyncio.run(
            load_flow.run_load(api_url, requests, concurrency, user, item, console)
        )
        console.print(load_flow.summary(result, concurrency))


@app.command()
def users() -> None:
    """Users with their credits, and the items with their prices."""
    with reporting_errors(err):
        reservations.users(settings(), console)


@app.command("top-up")
def top_up(user: str, amount: Annotated[int, typer.Argument(min=1, max=MAX_TOP_UP)]) -> None:
    """Add AMOUNT credits to USER."""
    with reporting_errors(err):
        reservations.top_up(settings(), user, amount, console)


@app.command()
def peek(
    user: Annotated[str, typer.Argument()] = "carol",
    item: Annotated[str, typer.Argument()] = "book-1",
) -> None:
    """Reserve once and show the reservation.requested message as it sat on the wire."""
    from cli import peek as peek_flow

    with reporting_errors(err):
        peek_flow.peek(settings(services=True), user, item, console)


@app.command()
def reset(data_dir: DataDir = None) -> None:
    """Start from scratch: remove the SQLite database and the traces (keeps .venv)."""
    from cli import reset as reset_flow

    with reporting_errors(err):
        reset_flow.reset(settings(data_dir), console)
