"""``reservations demo`` (``make demo``): start everything, send a confirmed and a rejected
reservation, and show the confirmed one's whole trace, fulfilment tail included."""

from rich.console import Console
from rich.rule import Rule

from cli.client import ApiClient
from cli.errors import CliError
from cli.reservations import reserve
from cli.run import run
from cli.settings import CliSettings
from cli.spans import SpanRecord
from cli.system import Interrupted, LocalSystem
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
        spans = complete_trace(system, settings, trace_id)
        logs = system.receiver.logs.trace(trace_id) if system.receiver is not None else []
        console.print(Rule("the confirmed reservation's trace"))
        console.print(Waterfall(spans, logs=logs))
        missing = SERVICES - {s.service for s in spans}
        if missing:
            raise CliError(f"the trace is incomplete: no spans from {sorted(missing)}.")

    run(settings, console, first=show_a_trace, exit_after=exit_after)


def send_reservations(settings: CliSettings, console: Console) -> str:
    """One confirmed (topping the user up first if needed) and one rejected; returns the trace
    id of the confirmed one."""
    user, item = CONFIRMED
    with ApiClient(settings.api_url) as api:
        catalogue = api.catalogue()
        price, credits = catalogue["items"][item], catalogue["users"][user]
        if credits < price:
            api.top_up(user, price - credits)
            console.print(f"topped {user} up by {price - credits} credits, so {item} is confirmed")
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
        return store.trace(trace_id) if store is not None else tempo.fetch(trace_id)

    def complete(spans: list[SpanRecord]) -> bool:
        ids = {s.span_id for s in spans}
        roots = [s for s in spans if s.parent_span_id not in ids]
        return SERVICES <= {s.service for s in spans} and len(roots) == 1

    return wait_until_stable(fetch, within=TRACE_WITHIN, complete=complete)
