"""Traces, metrics and logs for every service process, set up by its composition root.

- :mod:`telemetry.providers`: the three providers, built once by a composition root
  (``setup_telemetry``), with the broker's instrumentation switched on;
  :mod:`telemetry.exporters` picks each signal's exporters from the ``OTEL_*`` variables.
- :mod:`telemetry.span_rewriting` rewrites the spans an instrumentation starts, as it starts
  them; :mod:`telemetry.db_spans` does so for the database's, by the stable conventions.
- :mod:`telemetry.logs` (structured lines with trace ids) and :mod:`telemetry.otel_logs` (each
  line also an OTLP log record).

The messaging spans and metrics themselves live with the broker code they describe:
:mod:`messaging.instrumentation`, :mod:`messaging.semconv`, :mod:`messaging.propagation`,
:mod:`messaging.metrics` and :mod:`messaging.metered`.
"""
