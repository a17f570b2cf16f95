"""The messaging metrics of the OpenTelemetry semantic conventions, in one place.

Tempo's span metrics are computed from the spans it receives, so below 100 % sampling they
count only the sampled share. These instruments are recorded for every message, sampled or
not, through the metrics SDK (``Telemetry.meter_provider``), and stay exact.

Names, units, attributes and bucket boundaries follow the messaging metrics conventions:

- ``messaging.client.operation.duration`` (s): a client operation (``send``, ``settle``...);
- ``messaging.process.duration`` (s): a consumer callback processing one message;
- ``messaging.client.sent.messages`` ({message}): once per message sent;
- ``messaging.client.consumed.messages`` ({message}): once per message delivered to us.

The publish and consume path creates one :class:`MessagingMetrics` from the composition
root's meter provider and calls :meth:`MessagingMetrics.sent` / :meth:`MessagingMetrics.processed`
with :func:`attributes`.
"""

from collections.abc import Mapping

from opentelemetry.metrics import MeterProvider, NoOpMeterProvider
from opentelemetry.semconv._incubating.metrics.messaging_metrics import (
    MESSAGING_CLIENT_CONSUMED_MESSAGES,
    MESSAGING_CLIENT_OPERATION_DURATION,
    MESSAGING_CLIENT_SENT_MESSAGES,
    MESSAGING_PROCESS_DURATION,
)
from opentelemetry.util.types import AttributeValue

from messaging.semconv import SYSTEM

# ExplicitBucketBoundaries advised for both duration histograms by the conventions.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)

Attributes = Mapping[str, AttributeValue]


def attributes(
    operation_name: str,
    operation_type: str,
    destination: str,
    *,
    error_type: str | None = None,
    server_address: str | None = None,
    server_port: int | None = None,
    template: str | None = None,
) -> dict[str, AttributeValue]:
    """Metric attributes by the conventions. ``destination`` must be low-cardinality: give
    anonymous (reply-to) destinations as their ``template`` instead."""
    found: dict[str, AttributeValue] = {
        "messaging.system": SYSTEM,
        "messaging.operation.name": operation_name,
        "messaging.operation.type": operation_type,
    }
    if template is not None:
        found["messaging.destination.template"] = template
    else:
        found["messaging.destination.name"] = destination
    optional = {
        "error.type": error_type,
        "server.address": server_address,
        "server.port": server_port,
    }
    found.update({key: value for key, value in optional.items() if value is not None})
    return found


class MessagingMetrics:
    """The four instruments, created once from a meter provider."""

    def __init__(self, meter_provider: MeterProvider, version: str = "") -> None:
        # False with metrics off (OTEL_SDK_DISABLED, OTEL_METRICS_EXPORTER=none: the
        # composition root's no-op provider): the publish and consume paths then skip timing.
        self.recording = not isinstance(meter_provider, NoOpMeterProvider)
        meter = meter_provider.get_meter("messaging", version)
        self.operation_duration = meter.create_histogram(
            MESSAGING_CLIENT_OPERATION_DURATION,
            unit="s",
            description="Duration of messaging operation initiated by a producer or consumer "
            "client.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.process_duration = meter.create_histogram(
            MESSAGING_PROCESS_DURATION,
            unit="s",
            description="Duration of processing operation.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.sent_messages = meter.create_counter(
            MESSAGING_CLIENT_SENT_MESSAGES,
            unit="{message}",
            description="Number of messages producer attempted to send to the broker.",
        )
        self.consumed_messages = meter.create_counter(
            MESSAGING_CLIENT_CONSUMED_MESSAGES,
            unit="{message}",
            description="Number of messages that were delivered to the application.",
        )

    def sent(self, seconds: float, attributes: Attributes) -> None:
        """One message sent (or attempted: pass ``error.type`` when it failed)."""
        self.operation_duration.record(seconds, attributes)
        self.sent_messages.add(1, attributes)

    def processed(self, seconds: float, attributes: Attributes) -> None:
        """One delivered message, processed by our callback in ``seconds``."""
        self.consumed_messages.add(1, attributes)
        self.process_duration.record(seconds, attributes)
