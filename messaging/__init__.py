"""What every service shares: the broker behind a small typed surface, and the telemetry around
it (:mod:`messaging.telemetry`). Every module, by what it is for:

The broker:

- :mod:`messaging.broker`: ``Broker``: publish a model to a route, subscribe a handler to a
  queue, open a request/reply client; callers never see an AMQP message.
- :mod:`messaging.topology`: exchanges, queues, routes, bindings and dead-lettering, declared once.
- :mod:`messaging.connection` and :mod:`messaging.settings`: connecting at start-up, with a
  bounded wait and one clear sentence when the broker is not there or will not let us in;
  :mod:`messaging.connection_drops`: a dropped connection logged as one WARNING, then
  ``reconnected to broker``, not as aiormq's and aio-pika's ERRORs and tracebacks.
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

Their telemetry, by the semantic conventions:

- :mod:`messaging.instrumentation` and :mod:`messaging.semconv`: messaging spans that follow
  the current semantic conventions.
- :mod:`messaging.propagation`: trace-context extraction that garbage headers cannot break.
- :mod:`messaging.metrics` (the instruments) and :mod:`messaging.metered` (recorded on the one
  publish path and the one consume path).

The process-wide providers, exporters and logging are in :mod:`messaging.telemetry`; start-up
reporting and GC tuning in :mod:`service`.
"""
