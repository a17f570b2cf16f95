"""``reservations demo`` (``make demo``): start everything, send a confirmed and a rejected
reservation, and show the confirmed one's whole trace, fulfilment tail included."""

import os

from rich.console import Console
from rich.rule import Rule

from cli.demo_data import reset_demo_users
from cli.errors import CliError
from cli.reservations import reserve
from cli.run import run
from cli.settings import CliSettings
from cli.spans import SpanRecord
from cli.system import Interrupted, LocalSystem, tracing_caveat
from cli.tempo import TempoClient
from cli.trace_lookup import wait_until_stable
from cli.waterfall import Waterfall

SERVICES = {"reservations-api", "credit-check-worker", "fulfilment-worker"}
CONFIRMED = ("alice", "book-1")
REJECTED = ("bob", "course-1")
TRACE_WITHIN = 30.0


def demo(settings: CliSettings, console: Console, exit_after: bool) -> None:
    def show_a_trace(system: LocalSystem) -> None:
        trace_id = send_reservations(settings, console)
        if not trace_id:  # the API traces nothing: no trace id to wait for
            raise CliError(
                "the API answered without a trace id: its tracing is off.",
                hint=tracing_caveat(os.environ) or "",
            )
        spans = complete_trace(system, settings, trace_id)
        logs = system.receiver.logs.trace(trace_id) if system.receiver is not None else []
        console.print(Rule("the confirmed reservation's trace"))
        console.print(Waterfall(spans, logs=logs))
        missing = SERVICES - {s.service for s in spans}
        if missing:
            raise CliError(
                f"the trace is incomplete: no spans from {sorted(missing)}.",
                hint=tracing_caveat(os.environ) or "",
            )

    run(settings, console, first=show_a_trace, exit_after=exit_after)


def send_reservations(settings: CliSettings, console: Console) -> str:
    """One confirmed and one rejected, from the demo users' seed credits; returns the trace id
    of the confirmed one."""
    credits = reset_demo_users(settings, (CONFIRMED[0], REJECTED[0]))
    console.print(
        "[dim]the demo users start from their seed credits: "
        + ", ".join(f"{user} {amount}" for user, amount in credits.items())
        + "[/]"
    )
    user, item = CONFIRMED
    console.print(Rule(f"reserve {user} {item}"))
    trace_id = reserve(settings, user, item, console)
    user, item = REJECTED
    console.print(Rule(f"reserve {user} {item}"))
    try:
        reserve(settings, user, item, console)
    except CliError as error:
        console.print(f"  [dim]as expected: {error.message}[/]")
    return trace_id


def complete_trace(system: LocalSystem, settings: CliSettings, trace_id: str) -> list[SpanRecord]:
    """Spans from all three services, one root, and nothing new for a second."""
    store, tempo = system.store, TempoClient(settings.tempo_url)

    def fetch() -> list[SpanRecord]:
        if system.supervisor.stop_requested.is_set():
            raise Interrupted
        if store is not None:
            return store.trace(trace_id)
        try:
            return tempo.fetch(trace_id)
        except CliError as error:  # its hint names `trace` options, which `demo` has not
            raise CliError(
                error.message,
                hint=f"traces go to {system.otlp_endpoint}, so the demo reads them back from "
                f"Tempo: start it (`docker compose up -d tempo`) or set TEMPO_URL; or `unset "
                "OTEL_EXPORTER_OTLP_ENDPOINT` to use the embedded collector.",
            ) from None

    def complete(spans: list[SpanRecord]) -> bool:
        ids = {s.span_id for s in spans}
        roots = [s for s in spans if s.parent_span_id not in ids]
        return SERVICES <= {s.service for s in spans} and len(roots) == 1

    return wait_until_stable(fetch, within=TRACE_WITHIN, complete=complete)
