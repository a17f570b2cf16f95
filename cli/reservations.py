"""What ``reserve``, ``users`` and ``top-up`` print: the outcome first, then the trace to open."""

import re

from rich.console import Console
from rich.table import Table

from cli.client import ApiClient, body_of, describe_error
from cli.errors import CliError
from cli.invocation import command
from cli.settings import CliSettings
from cli.tempo import grafana_explore_url


class NotConfirmed(CliError):
    """The API answered, but not with a confirmation (nor a pending one)."""

    def __init__(self, message: str, trace_id: str, status: int) -> None:
        super().__init__(message)
        self.trace_id = trace_id
        self.status = status  # the HTTP status


OUTCOME_STYLES = {
    "confirmed": "bold green",
    "pending": "bold yellow",
    "rejected_insufficient_credits": "bold red",
}


def reserve(
    settings: CliSettings,
    username: str,
    item_id: str,
    console: Console,
    idempotency_key: str | None = None,
) -> str:
    """Reserve and print the outcome; returns the trace id. A reservation that is not
    confirmed (or accepted as pending) is a failure, so scripts can rely on the exit code."""
    with ApiClient(settings.api_url) as api:
        response = api.reserve(username, item_id, idempotency_key)
    body = body_of(response)
    trace_id = str(body.get("trace_id") or response.headers.get("x-trace-id", ""))
    status = str(body.get("status", "failed"))
    console.print(
        f"[{OUTCOME_STYLES.get(status, 'bold red')}]{status}[/] "
        f"[dim]HTTP {response.status_code}[/]  {username} → {item_id}"
    )
    if body.get("reservation_id"):
        console.print(f"  reservation   {body['reservation_id']}")
    if "credits_left" in body:
        console.print(f"  credits left  [bold]{body['credits_left']}[/]")
    if response.status_code == 202:
        console.print(f"  poll          {settings.api_url}{response.headers.get('location', '')}")
    print_trace_links(settings, trace_id, console)
    if response.status_code not in (201, 202):
        raise NotConfirmed(
            f"reservation not confirmed: {describe_error(body)}", trace_id, response.status_code
        )
    return trace_id


IDEMPOTENCY_KEY_HELP = (
    "Send this Idempotency-Key: running the command again with the same key, USER and ITEM "
    "never reserves twice. Default: a random key, used for the command's own retries (after "
    "a timeout, a lost connection or a 503)."
)
TRACE_ARGUMENT = "32 hex characters, or a reservation id (the trace of its request)"

# A reservation id as the API writes it (a trace id is 32 hex digits without dashes).
RESERVATION_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)


def trace_of(settings: CliSettings, value: str) -> str:
    """``value`` if it is a trace id; for a reservation id, the trace of the request that
    created that reservation (``GET /reservations/{id}``)."""
    if not RESERVATION_ID.fullmatch(value.strip()):
        return value
    with ApiClient(settings.api_url) as api:
        response = api.request("GET", f"/reservations/{value.strip()}")
    body = body_of(response)
    if response.status_code != 200:
        raise CliError(f"reservation {value}: {describe_error(body)}")
    if not body.get("trace_id"):
        raise CliError(f"reservation {value} has no trace id (its request was not traced).")
    return str(body["trace_id"])


def print_trace_links(settings: CliSettings, trace_id: str, console: Console) -> None:
    if not trace_id:
        return
    console.print(f"  trace id      [bold]{trace_id}[/]")
    console.print(f"  waterfall     {command()} trace {trace_id}")
    if settings.grafana_url:
        url = grafana_explore_url(settings.grafana_url, trace_id)
        console.print(f"  grafana       [link={url}]{url}[/link]", soft_wrap=True)


def users(settings: CliSettings, console: Console) -> None:
    with ApiClient(settings.api_url) as api:
        catalogue = api.catalogue()
    people = Table("user", "credits", title="users")
    for name, credits in sorted(catalogue["users"].items()):
        people.add_row(name, str(credits))
    items = Table("item", "price", title="items")
    for item_id, price in sorted(catalogue["items"].items()):
        items.add_row(item_id, str(price))
    console.print(people, items)


def top_up(settings: CliSettings, username: str, amount: int, console: Console) -> None:
    with ApiClient(settings.api_url) as api:
        user = api.top_up(username, amount)
    console.print(f"{user['username']} now has [bold]{user['credits']}[/] credits (+{amount})")
