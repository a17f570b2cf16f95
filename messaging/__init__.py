"""What every service shares: the broker behind a small typed surface, and the telemetry and
process set-up around it. Every module, by what it is for:

The broker:

- :mod:`messaging.broker`: ``Broker``: publish a model to a route, subscribe a handler to a
  queue, open a request/reply client; callers never see an AMQP message.
- :mod:`messaging.topology`: exchanges, queues, routes, bindings and dead-lettering, declared once.
- :mod:`messaging.connection` and :mod:`messaging.settings`: connecting at start-up, with a
  bounded wait and one clear sentence when the broker is not there or will not let us in.
- :mod:`messaging.messages`: the frozen, versioned JSON message contracts.
- :mod:`messaging.handlers`: what a handler is and returns (``Handler``, ``Handled``).
- :mod:`messaging.rpc`: the request/reply client over RabbitMQ direct reply-to;
  :mod:`messaging.readiness` (publish only once a reconnected channel is whole) and
  :mod:`messaging.republisher` (requests whose confirm was lost, republished until confirmed).
- :mod:`messaging.subscriber` and :mod:`messaging.delivery`: consuming, settling, retrying and
  dead-lettering one delivery; graceful stop. :mod:`messaging.dead_letter`: dead-lettering on
  purpose, with a reason.
- :mod:`messaging.publisher` and :mod:`messaging.envelope`: publishing models; the one place
  an AMQP message is built.

Telemetry (traces, metrics, logs):

- :mod:`messaging.telemetry`: the three providers, built once by a composition root;
  :mod:`messaging.exporters` picks each signal's exporters from the ``OTEL_*`` variables.
- :mod:`messaging.instrumentation` and :mod:`messaging.semconv`: messaging spans that follow
  the current semantic conventions; :mod:`messaging.span_rewriting` rewrites the spans an
  instrumentation starts, as it starts them; :mod:`messaging.db_spans` does so for the
  database's.
- :mod:`messaging.propagation`: trace-context extraction that garbage headers cannot break.
- :mod:`messaging.metrics` (the instruments) and :mod:`messaging.metered` (recorded on the one
  publish path and the one consume path).
- :mod:`messaging.logs` (structured lines with trace ids) and :mod:`messaging.otel_logs` (each
  line also an OTLP log record).

The process:

- :mod:`messaging.startup`: a service that cannot start says so in one line.
- :mod:`messaging.gc_tuning`: the garbage collector's settings for a long-running service.
"""
