"""What ``reserve``, ``users`` and ``top-up`` print: the outcome first, then the trace to open."""

from rich.console import Console
from rich.table import Table

from cli.client import ApiClient, body_of, describe_error
from cli.errors import CliError
from cli.settings import CliSettings
from cli.tempo import grafana_explore_url


class NotConfirmed(CliError):
    """The API answered, but not with a confirmation (nor a pending one)."""

    def __init__(self, message: str, trace_id: str) -> None:
        super().__init__(message)
        self.trace_id = trace_id


OUTCOME_STYLES = {
    "confirmed": "bold green",
    "pending": "bold yellow",
    "rejected_insufficient_credits": "bold red",
}


def reserve(settings: CliSettings, username: str, item_id: str, console: Console) -> str:
    """Reserve and print the outcome; returns the trace id. A reservation that is not
    confirmed (or accepted as pending) is a failure, so scripts can rely on the exit code."""
    with ApiClient(settings.api_url) as api:
        response = api.reserve(username, item_id)
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
        raise NotConfirmed(f"reservation not confirmed: {describe_error(body)}", trace_id)
    return trace_id


def print_trace_links(settings: CliSettings, trace_id: str, console: Console) -> None:
    if not trace_id:
        return
    console.print(f"  trace id      [bold]{trace_id}[/]")
    console.print(f"  waterfall     reservations trace {trace_id}")
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
