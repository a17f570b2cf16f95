"""Database spans named and attributed by the stable semantic conventions.

With ``OTEL_SEMCONV_STABILITY_OPT_IN=database`` (the default, see
:mod:`messaging.telemetry.providers`) the contrib SQLAlchemy instrumentation 0.66b1 writes
``db.system.name``, ``db.namespace`` and ``db.query.text``, but still names a span ``{first SQL
word} {database}`` and copies that name into ``db.operation.name``. For SQLite the "database" is the
file path, so spans were called ``BEGIN .data/reservations.db`` and Tempo's service graph drew a
node per path.

We hand the instrumentor a tracer provider whose spans fix this as the instrumentation writes
them: the name becomes ``{db.operation.name} {target}`` (the table the statement acts on, else
the namespace: ``UPDATE users``, ``BEGIN reservations``), ``db.operation.name`` is the SQL keyword
alone, ``db.collection.name`` is set when the statement names exactly one table (as the
conventions ask), and a SQLite namespace is the file's stem, not its path.

The instrumentation does not see the statements the store runs on the driver's cursor
(``store.driver``): :func:`instrument_engine` returns a span factory for them, named alike.
"""

import re
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from functools import lru_cache
from pathlib import Path

from opentelemetry import trace
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.instrumentation.utils import unwrap
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, TracerProvider
from opentelemetry.util.types import Attributes, AttributeValue
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from messaging.telemetry.span_rewriting import RewritingTracer, RewritingTracerProvider

# Keys of the old conventions, dropped if an instrumentation still writes one.
_LEGACY = {"db.system", "db.name", "db.statement", "db.operation", "db.user"}
_LEGACY |= {"net.peer.name", "net.peer.port", "net.transport"}
_COMMENTS = re.compile(r"^\s*(?:--[^\n]*\n|/\*.*?\*/|\s)*", re.DOTALL)
_TABLES = re.compile(
    r"\b(?:FROM|JOIN|INTO|UPDATE|TABLE(?:\s+IF\s+NOT\s+EXISTS)?)\s+([\w.\"`]+)", re.I
)


# Structurally ``store.driver.StatementSpans`` (telemetry does not import the store).
StatementSpans = Callable[[str], AbstractContextManager[object]]


def instrument_engine(engine: AsyncEngine, tracer_provider: TracerProvider) -> StatementSpans:
    """One CLIENT span per statement, by the stable database conventions; returns the span
    factory for the statements the store runs on the driver's cursor. Nothing at all with
    tracing off: even unrecorded, the hooks cost CPU on every statement."""
    if isinstance(tracer_provider, trace.NoOpTracerProvider):
        return lambda _: nullcontext()
    database = engine.url.database
    namespace = Path(database).stem if engine.dialect.name == "sqlite" and database else None
    SQLAlchemyInstrumentor().instrument(
        engine=engine.sync_engine,
        tracer_provider=RewritingTracerProvider(
            tracer_provider, lambda tracer: _DbTracer(tracer, namespace)
        ),
    )
    # The instrumentor also wraps Engine.connect, to start a "connect" span at every pool
    # checkout, which _DbTracer drops: the wrapper alone cost some 0.04 ms per PostgreSQL
    # transaction (README, Performance). Its uninstrument() unwraps it the same way.
    unwrap(Engine, "connect")
    tracer = tracer_provider.get_tracer(__name__)
    url, namespace = engine.url, namespace or database or ""
    server = (url.host or "", url.port or 0)

    def statement_span(statement: str) -> AbstractContextManager[object]:
        name, attributes = _describe(statement, engine.dialect.name, namespace, server)
        return tracer.start_as_current_span(name, kind=SpanKind.CLIENT, attributes=attributes)

    return statement_span


def uninstrument_engines() -> None:
    """Remove the SQLAlchemy instrumentation's patches and engine listeners, on the way out
    (:meth:`messaging.telemetry.providers.Telemetry.shutdown`). The instrumentor is one per process
    and ignores a second ``instrument()``: without this, an engine made after an earlier one shut
    down in the same process (the tests' apps, one after another) would make no spans."""
    instrumentor = SQLAlchemyInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()


@lru_cache(maxsize=64)
def _describe(
    statement: str, system: str, namespace: str, server: tuple[str, int]
) -> tuple[str, Attributes]:
    """A hand-run statement's span name and attributes, as the instrumentation makes them."""
    operation, table, collection = parse(statement)
    attributes: dict[str, AttributeValue] = {
        "db.system.name": system,
        "db.namespace": namespace,
        "db.query.text": statement,
        "db.operation.name": operation,
    }
    host, port = server
    if host:
        attributes["server.address"] = host
    if port:
        attributes["server.port"] = port
    if collection:
        attributes["db.collection.name"] = collection
    return f"{operation} {table or namespace}", attributes


@lru_cache(maxsize=512)
def parse(statement: str) -> tuple[str, str | None, str | None]:
    """The SQL keyword, the table it acts on (outside any subquery) and, when the statement
    names exactly one table, that table as the collection. No parser: a keyword scan, done once
    per distinct statement text (the hot path's are compiled once, so their text repeats)."""
    text = _COMMENTS.sub("", statement, count=1)
    words = text.split(maxsplit=1)
    operation = words[0].upper() if words else ""
    target = None
    tables = set()
    for match in _TABLES.finditer(text):
        name = match.group(1).strip('"`')
        if name.upper() == "SET":  # "... DO UPDATE SET" (an upsert) is no table
            continue
        tables.add(name)
        before = text[: match.start()]
        if target is None and before.count("(") == before.count(")"):
            target = name
    return operation, target, (tables.pop() if len(tables) == 1 else None)


class _DbTracer(RewritingTracer):
    def __init__(self, delegate: Tracer, namespace: str | None) -> None:
        super().__init__(delegate)
        self._namespace = namespace

    def drops(self, name: str) -> bool:
        return name == "connect"  # a pool checkout: no span, the statements tell the story

    def rewrite(self, name: str, kind: SpanKind, attributes: Attributes) -> tuple[str, Attributes]:
        # Until the statement is known: the keyword alone, never the database path.
        return (name.split(maxsplit=1)[0] if name.strip() else name), None

    def wrap(self, span: Span, attributes: Attributes) -> Span:
        wrapped = _DbSpan(span, self._namespace)
        wrapped.set_attributes(attributes or {})
        return wrapped


class _DbSpan(Span):
    """A span that rewrites the attributes the instrumentation sets, as it sets them."""

    def __init__(self, delegate: Span, namespace: str | None) -> None:
        self._delegate = delegate
        self._namespace_override = namespace
        self._namespace = namespace
        self._operation: str | None = None

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        if key in _LEGACY:
            return
        if key == "db.namespace":
            self._namespace = self._namespace_override or str(value)
            value = self._namespace
        elif key == "db.operation.name":
            if self._operation is not None:
                return  # already set from the statement
            value = str(value).split(maxsplit=1)[0] if str(value).strip() else value
        elif key == "db.query.text":
            self._from_statement(str(value))
        self._delegate.set_attribute(key, value)

    def _from_statement(self, statement: str) -> None:
        operation, table, collection = parse(statement)
        if not operation:
            return
        self._operation = operation
        self._delegate.set_attribute("db.operation.name", operation)
        if collection:
            self._delegate.set_attribute("db.collection.name", collection)
        target = table or self._namespace
        self._delegate.update_name(f"{operation} {target}" if target else operation)

    def set_attributes(self, attributes: Mapping[str, AttributeValue]) -> None:
        for key, value in attributes.items():
            self.set_attribute(key, value)

    def end(self, end_time: int | None = None) -> None:
        self._delegate.end(end_time)

    def get_span_context(self) -> trace.SpanContext:
        return self._delegate.get_span_context()

    def add_event(
        self, name: str, attributes: Attributes = None, timestamp: int | None = None
    ) -> None:
        self._delegate.add_event(name, attributes, timestamp)

    def add_link(self, context: trace.SpanContext, attributes: Attributes = None) -> None:
        self._delegate.add_link(context, attributes)

    def update_name(self, name: str) -> None:
        self._delegate.update_name(name)

    def is_recording(self) -> bool:
        return self._delegate.is_recording()

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        self._delegate.set_status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        self._delegate.record_exception(exception, attributes, timestamp, escaped)
