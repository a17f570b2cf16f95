"""Traces, metrics and logs for every service process, set up by its composition root.

- :mod:`messaging.telemetry.providers`: the three providers, built once by a composition root
  (``setup_telemetry``), with the broker's instrumentation switched on;
  :mod:`messaging.telemetry.exporters` picks each signal's exporters from the ``OTEL_*``
  variables.
- :mod:`messaging.telemetry.span_rewriting` rewrites the spans an instrumentation starts, as it
  starts them; :mod:`messaging.telemetry.db_spans` does so for the database's, by the stable
  conventions.
- :mod:`messaging.telemetry.logs` (structured lines with trace ids) and
  :mod:`messaging.telemetry.otel_logs` (each line also an OTLP log record).

The messaging spans and metrics themselves sit beside the broker code they describe:
:mod:`messaging.instrumentation`, :mod:`messaging.semconv`, :mod:`messaging.propagation`,
:mod:`messaging.metrics` and :mod:`messaging.metered`.
"""
