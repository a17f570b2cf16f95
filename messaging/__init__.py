"""What every service shares about the broker.

- :mod:`messaging.topology`: exchanges, queues, bindings and dead-lettering, declared once.
- :mod:`messaging.messages`: the frozen, versioned JSON message contracts.
- :mod:`messaging.rpc`: the request/reply client over RabbitMQ direct reply-to.
- :mod:`messaging.instrumentation`: messaging spans that follow the current semantic conventions.
- :mod:`messaging.telemetry` and :mod:`messaging.logs`: tracer provider and structured logs.
"""
