"""``reservations peek``: one real ``reservation.requested`` message as it sits on the wire, and
the proof that its ``traceparent`` header names the PRODUCER span of the waterfall.

It binds a temporary, exclusive queue of its own to the ``reservations`` exchange for
``reservation.requested``, so RabbitMQ hands it a *copy* of the next request while the
credit-check worker gets the original as usual: nothing is taken from the worker's queue.
"""

import asyncio
import json
from typing import Any

from aio_pika.abc import AbstractIncomingMessage
from rich.console import Console
from rich.rule import Rule
from rich.table import Table

from cli.errors import CliError
from cli.invocation import command
from cli.log_store import read_trace_logs
from cli.preflight import open_connection
from cli.reservations import NotConfirmed, reserve
from cli.settings import CliSettings
from cli.spans import SpanRecord
from cli.tempo import TempoClient
from cli.trace_lookup import LATE_SPANS, Source, find_trace
from cli.waterfall import Waterfall
from messaging.topology import RESERVATION_REQUESTED, RESERVATIONS

WITHIN = 10.0
# What the worker answers besides a confirmation: not enough credits, an unknown user or item.
WORKER_ANSWERS = (404, 409)


def peek(settings: CliSettings, user: str, item: str, console: Console) -> None:
    message, trace_id = asyncio.run(_capture(settings, user, item, console))
    headers: dict[str, Any] = dict(message.headers or {})
    console.print(
        Rule(f"the {RESERVATION_REQUESTED} message on the wire (a copy: the worker got it too)")
    )
    console.print(_properties(message, headers), highlight=False)
    traceparent = str(headers.get("traceparent", ""))
    parts = traceparent.split("-")
    if len(parts) != 4:
        raise CliError(f"the message carries no valid traceparent header: {traceparent!r}")
    _, parent_trace_id, span_id, _ = parts
    spans = find_trace(parent_trace_id, Source.auto, settings.data_dir,
                       TempoClient(settings.tempo_url), within=WITHIN,
                       complete=lambda spans: _with_consumer(spans, span_id))  # fmt: skip
    producer = next((s for s in spans if s.span_id == span_id), None)
    if producer is None:
        raise CliError(
            f"span {span_id} of trace {parent_trace_id} has not arrived within {WITHIN:g} s.",
            hint=f"{LATE_SPANS}: try again.",
        )
    if producer.kind != "PRODUCER":
        raise CliError(f"span {span_id} of trace {parent_trace_id} is not a PRODUCER span.")
    console.print(
        f"traceparent [bold]{traceparent}[/]\n"
        f"  trace id  {parent_trace_id}  "
        f"({'the reservation' if trace_id == parent_trace_id else 'not the reservation'}'s trace)\n"
        f"  span id   {span_id}  = [bold]{producer.name}[/] ({producer.kind}, "
        f"{producer.service}), the parent of the worker's CONSUMER span below",
        highlight=False,
    )
    console.print(Rule("its trace"))
    console.print(Waterfall(spans, logs=read_trace_logs(settings.data_dir, parent_trace_id)))


async def _capture(
    settings: CliSettings, user: str, item: str, console: Console
) -> tuple[AbstractIncomingMessage, str]:
    """Bind a private copy queue, make one reservation, return the copy and the trace id."""
    hint = f"start the system first: `{command()} run`; and check AMQP_URL."
    async with await open_connection(settings.amqp_url, hint) as connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange(RESERVATIONS.name, ensure=True)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange, RESERVATION_REQUESTED)
        async with queue.iterator(no_ack=True) as copies:
            trace_id = await asyncio.to_thread(_reserve, settings, user, item, console)
            try:
                async with asyncio.timeout(WITHIN):
                    async for message in copies:
                        return message, trace_id
            except TimeoutError:
                pass
    raise CliError(f"no {RESERVATION_REQUESTED} message within {WITHIN:g} s.")


def _reserve(settings: CliSettings, user: str, item: str, console: Console) -> str:
    """Any answer from the worker will do (a rejection is a reply too); one the API gives
    without publishing (a 422 for a name that is not valid, say) ends the peek at once, where
    it waited 10 s for a message that could not come."""
    try:
        return reserve(settings, user, item, console)
    except NotConfirmed as answer:
        if answer.status not in WORKER_ANSWERS:
            raise CliError(f"{answer.message}; nothing was published.") from None
        console.print(f"  [dim]{answer.message}[/]", highlight=False)
        return answer.trace_id


def _with_consumer(spans: list[SpanRecord], producer_id: str) -> bool:
    """The header's span has arrived, and the worker's CONSUMER span under it."""
    ids = {s.span_id for s in spans}
    return producer_id in ids and any(s.parent_span_id == producer_id for s in spans)


def _properties(message: AbstractIncomingMessage, headers: dict[str, Any]) -> Table:
    table = Table("property", "value", show_header=False, box=None, padding=(0, 2, 0, 0))
    fields = {
        "exchange": message.exchange,
        "routing_key": message.routing_key,
        "content_type": message.content_type,
        "delivery_mode": f"{int(message.delivery_mode or 0)} (persistent)",
        "message_id": message.message_id,
        "correlation_id": message.correlation_id,
        "reply_to": message.reply_to,
        "type": message.type,
    }
    for name, value in fields.items():
        table.add_row(name, str(value))
    for name, value in sorted(headers.items()):
        table.add_row(f"headers.{name}", _text(value))
    table.add_row("body", message.body.decode(errors="replace"))
    return table


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else json.dumps(value)
