"""What every service shares about the broker, behind a small typed surface.

- :mod:`messaging.broker`: ``Broker``: publish a model to a route, subscribe a handler to a
  queue, open a request/reply client; callers never see an AMQP message.
- :mod:`messaging.topology`: exchanges, queues, routes, bindings and dead-lettering, declared once.
- :mod:`messaging.messages`: the frozen, versioned JSON message contracts.
- :mod:`messaging.handlers`: what a handler is and returns (``Handler``, ``Handled``).
- :mod:`messaging.rpc`: the request/reply client over RabbitMQ direct reply-to.
- :mod:`messaging.subscriber` and :mod:`messaging.delivery`: consuming, settling, retrying and
  dead-lettering one delivery; graceful stop.
- :mod:`messaging.publisher` and :mod:`messaging.envelope`: publishing models; the one place
  an AMQP message is built.
- :mod:`messaging.instrumentation` and :mod:`messaging.semconv`: messaging spans that follow
  the current semantic conventions.
- :mod:`messaging.telemetry` and :mod:`messaging.logs`: tracer provider and structured logs.
"""
