"""tempo/tempo.yaml: only keys Tempo 3.0.3 accepts, receivers the apps can reach, metrics out."""

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.static import environment, load_yaml, mount_target, services

pytestmark = pytest.mark.static

APPS = ("api", "credit-check-worker", "fulfilment-worker")

# Allow-lists from the v3.0.3 tag of grafana/tempo: the yaml tags of Config in
# cmd/tempo/app/config.go (top level), modules/generator/config.go (metrics_generator and
# its processor block), the processors' config.go files, and the processor names in
# modules/generator/validation/fields.go (SupportedProcessors). Tempo 3 loads its config with
# yaml.UnmarshalStrict, so a key outside these lists stops it at start-up.
TOP_LEVEL = {
    "target",
    "auth_enabled",
    "multitenancy_enabled",
    "shutdown_delay",
    "stream_over_http_enabled",
    "http_api_prefix",
    "enable_go_runtime_metrics",
    "span_profiling",
    "memory",
    "server",
    "internal_server",
    "distributor",
    "live_store_client",
    "querier",
    "query_frontend",
    "metrics_generator",
    "ingest",
    "block_builder",
    "storage",
    "overrides",
    "memberlist",
    "usage_report",
    "cache",
    "backend_scheduler",
    "backend_scheduler_client",
    "backend_worker",
    "live_store",
}
METRICS_GENERATOR = {
    "ring",
    "processor",
    "registry",
    "storage",
    "metrics_ingestion_time_range_slack",
    "override_ring_key",
    "ring_mode",
    "codec",
    "limiter_type",
    "ingest_concurrency",
    "instance_id",
    "leave_consumer_group_on_shutdown",
}
PROCESSOR_BLOCKS = {
    "service_graphs": {
        "wait",
        "max_items",
        "workers",
        "histogram_buckets",
        "dimensions",
        "enable_client_server_prefix",
        "enable_messaging_system_latency_histogram",
        "peer_attributes",
        "span_multiplier_key",
        "enable_tracestate_span_multiplier",
        "enable_virtual_node_label",
        "database_name_attributes",
        "filter_policies",
    },
    "span_metrics": {
        "histogram_buckets",
        "intrinsic_dimensions",
        "dimensions",
        "dimension_mappings",
        "enable_target_info",
        "span_multiplier_key",
        "enable_tracestate_span_multiplier",
        "filter_policies",
        "target_info_excluded_dimensions",
        "enable_instance_label",
    },
    "host_info": {"host_identifiers", "metric_name"},
}
PROCESSORS = {
    "service-graphs",
    "span-metrics",
    "span-metrics-count",
    "span-metrics-latency",
    "span-metrics-size",
    "host-info",
}
# The keys of every other block tempo.yaml sets, from the same tag: server (dskit's
# server.Config, vendor/github.com/grafana/dskit/server/server.go: the ones a single binary
# needs), distributor (modules/distributor/config.go), query_frontend
# (modules/frontend/config.go), the generator's registry and storage
# (modules/generator/registry/config.go, modules/generator/storage/config.go), storage.trace
# (tempodb/config.go, its wal and local blocks in tempodb/wal/wal.go and
# tempodb/backend/local/config.go), the overrides' defaults (modules/overrides/config.go:
# Overrides, MetricsGeneratorOverrides) and usage_report (pkg/usagestats/config.go).
BLOCK_KEYS: dict[tuple[str, ...], set[str]] = {
    ("server",): {
        "http_listen_address",
        "http_listen_port",
        "grpc_listen_address",
        "grpc_listen_port",
        "log_format",
        "log_level",
    },
    ("distributor",): {
        "ring",
        "receivers",
        "override_ring_key",
        "log_received_spans",
        "log_discarded_spans",
        "metric_received_spans",
        "forwarders",
        "usage",
        "kafka_config",
        "retry_after_on_resource_exhausted",
        "max_attribute_bytes",
        "artificial_delay",
    },
    ("query_frontend",): {
        "api_timeout",
        "max_retries",
        "max_grpc_streaming_packet_size",
        "multi_tenant_queries_enabled",
        "query_end_cutoff",
        "search",
        "trace_by_id",
        "metrics",
        "weights",
        "url_deny_list",
        "mcp_server",
        "allowed_headers",
        "response_consumers",
        "max_query_expression_size_bytes",
        "rf",
        "skip_ast_transformations",
    },
    ("metrics_generator", "registry"): {
        "collection_interval",
        "external_labels",
        "inject_tenant_id_as",
        "max_label_name_length",
        "max_label_value_length",
        "stale_duration",
    },
    ("metrics_generator", "storage"): {
        "path",
        "wal",
        "remote_write",
        "remote_write_add_org_id_header",
        "remote_write_flush_deadline",
    },
    ("storage",): {"trace"},
    ("storage", "trace"): {
        "pool",
        "wal",
        "block",
        "search",
        "blocklist_poll",
        "blocklist_poll_concurrency",
        "blocklist_poll_tenant_concurrency",
        "blocklist_poll_fallback",
        "blocklist_poll_tenant_index_builders",
        "blocklist_poll_stale_tenant_index",
        "blocklist_poll_jitter_ms",
        "blocklist_poll_tolerate_consecutive_errors",
        "blocklist_poll_tolerate_tenant_failures",
        "empty_tenant_deletion_enabled",
        "empty_tenant_deletion_age",
        "backend",
        "local",
        "gcs",
        "s3",
        "azure",
        "cache",
        "background_cache",
        "memcached",
        "redis",
    },
    ("storage", "trace", "wal"): {"path", "ingestion_time_range_slack"},
    ("storage", "trace", "local"): {"path"},
    ("overrides",): {"defaults", "per_tenant_override_config", "per_tenant_override_period"},
    ("overrides", "defaults"): {
        "ingestion",
        "read",
        "compaction",
        "metrics_generator",
        "forwarders",
        "global",
        "storage",
        "cost_attribution",
    },
    ("overrides", "defaults", "metrics_generator"): {
        "ring_size",
        "processors",
        "max_active_series",
        "max_active_entities",
        "collection_interval",
        "disable_collection",
        "generate_native_histograms",
        "trace_id_label_name",
        "remote_write_headers",
        "forwarder",
        "processor",
        "ingestion_time_range_slack",
        "native_histogram_bucket_factor",
        "native_histogram_max_bucket_number",
        "native_histogram_min_reset_duration",
        "span_name_sanitization",
        "max_cardinality_per_label",
    },
    ("usage_report",): {"reporting_enabled", "backoff"},
}
# Tempo 2 keys that Tempo 3 removed (release notes v3-0.md, "Upgrade considerations", and
# migrate-to-3.md): the ingester and compactor blocks, the local-blocks processor with its
# filter_server_spans switch, and the generator client (which 3.0 still accepts, deprecated
# and ignored: kept out all the same).
TEMPO_2_ONLY = {
    "ingester",
    "ingester_client",
    "compactor",
    "metrics_generator_client",
    "local_blocks",
    "local-blocks",
    "filter_server_spans",
    "flush_to_storage",
}


def _tempo() -> dict[str, Any]:
    config: dict[str, Any] = load_yaml("tempo/tempo.yaml")
    return config


def _walk(node: Any) -> Iterator[str]:
    """Every mapping key and every string value, at any depth."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)
    elif isinstance(node, str):
        yield node


def _receiver_ports() -> dict[str, int]:
    protocols = _tempo()["distributor"]["receivers"]["otlp"]["protocols"]
    return {name: int(spec["endpoint"].rsplit(":", 1)[1]) for name, spec in protocols.items()}


def test_image_is_tempo_3_0_and_runs_the_single_binary_with_this_file() -> None:
    tempo = services()["tempo"]
    assert tempo["image"].startswith("grafana/tempo:3.0.")
    assert "-target=all" in tempo["command"]
    config_flag = f"-config.file={mount_target('tempo', 'tempo/tempo.yaml')}"
    assert config_flag in tempo["command"]


def test_top_level_keys_exist_in_tempo_3() -> None:
    keys = set(_tempo())
    assert keys <= TOP_LEVEL, f"unknown to Tempo 3.0.3: {keys - TOP_LEVEL}"
    assert {"distributor", "metrics_generator", "storage", "overrides"} <= keys


def test_metrics_generator_keys_exist_in_tempo_3() -> None:
    generator = _tempo()["metrics_generator"]
    assert set(generator) <= METRICS_GENERATOR
    for block, keys in generator["processor"].items():
        allowed = PROCESSOR_BLOCKS.get(block)
        assert allowed is not None, f"unknown processor block {block}"
        assert set(keys) <= allowed, f"{block}: {set(keys) - allowed}"


@pytest.mark.parametrize("block", BLOCK_KEYS, ids=".".join)
def test_every_other_block_s_keys_exist_in_tempo_3(block: tuple[str, ...]) -> None:
    """A typo anywhere (``query_end_cuttoff``) stops Tempo at start-up, as a key at the top
    does."""
    node: Any = _tempo()
    for key in block:
        node = node.get(key) if isinstance(node, dict) else None
    if node is None:
        return  # not set here: nothing to check
    assert set(node) <= BLOCK_KEYS[block], f"{'.'.join(block)}: {set(node) - BLOCK_KEYS[block]}"


def test_every_block_with_keys_of_its_own_is_checked() -> None:
    """Each mapping tempo.yaml sets is checked by one allow-list or another, but the receivers'
    (the OpenTelemetry Collector's own OTLP receiver settings)."""
    checked = set(BLOCK_KEYS) | {("metrics_generator",), ("metrics_generator", "processor")}
    checked |= {("metrics_generator", "processor", block) for block in PROCESSOR_BLOCKS}

    def blocks(node: Any, path: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
        if isinstance(node, dict):
            if path:
                yield path
            for key, value in node.items():
                if path + (key,) != ("distributor", "receivers"):
                    yield from blocks(value, path + (key,))

    unchecked = set(blocks(_tempo(), ())) - checked
    unchecked = {path for path in unchecked if not path[-1:] == ("external_labels",)}
    assert not unchecked, f"no allow-list for {sorted(unchecked)}"


def test_no_tempo_2_only_key_appears_anywhere() -> None:
    found = set(_walk(_tempo())) & TEMPO_2_ONLY
    assert not found, f"Tempo 3 rejects: {found}"


def test_span_metrics_and_service_graphs_are_enabled() -> None:
    processors = _tempo()["overrides"]["defaults"]["metrics_generator"]["processors"]
    assert set(processors) <= PROCESSORS
    assert {"service-graphs", "span-metrics"} <= set(processors)


def test_service_graphs_measure_time_in_the_broker() -> None:
    service_graphs = _tempo()["metrics_generator"]["processor"]["service_graphs"]
    assert service_graphs["enable_messaging_system_latency_histogram"] is True
    buckets = service_graphs["histogram_buckets"]
    assert buckets == sorted(buckets) and buckets[0] <= 0.001


def test_span_metrics_keep_every_span_kind() -> None:
    # No filter policy: PRODUCER and CONSUMER spans get span metrics like SERVER spans do.
    span_metrics = _tempo()["metrics_generator"]["processor"]["span_metrics"]
    assert "filter_policies" not in span_metrics
    assert span_metrics.get("intrinsic_dimensions", {}).get("span_kind", True) is True


def test_metrics_are_remote_written_to_prometheus_with_exemplars() -> None:
    (remote_write,) = _tempo()["metrics_generator"]["storage"]["remote_write"]
    url = urlsplit(remote_write["url"])
    assert (url.hostname, url.port, url.path) == ("prometheus", 9090, "/api/v1/write")
    assert remote_write["send_exemplars"] is True
    assert "prometheus" in services()


def test_receivers_listen_on_all_interfaces() -> None:
    protocols = _tempo()["distributor"]["receivers"]["otlp"]["protocols"]
    assert {name: spec["endpoint"] for name, spec in protocols.items()} == {
        "grpc": "0.0.0.0:4317",
        "http": "0.0.0.0:4318",
    }


@pytest.mark.parametrize("app", APPS)
def test_each_app_exports_to_tempo_s_grpc_receiver(app: str) -> None:
    # The apps use the OTLP/gRPC exporter, so the endpoint must be Tempo's gRPC receiver.
    endpoint = urlsplit(environment(services()[app])["OTEL_EXPORTER_OTLP_ENDPOINT"])
    assert endpoint.scheme == "http"  # plaintext gRPC inside the compose network
    assert endpoint.hostname == "tempo"
    assert endpoint.port == _receiver_ports()["grpc"]


def test_published_tempo_ports_are_ones_tempo_listens_on() -> None:
    listening = set(_receiver_ports().values()) | {_tempo()["server"]["http_listen_port"]}
    published = {int(str(port).split(":")[-1]) for port in services()["tempo"]["ports"]}
    assert published == listening


def test_all_state_lives_in_the_tempo_volume() -> None:
    tempo = _tempo()
    paths = [
        tempo["storage"]["trace"]["wal"]["path"],
        tempo["storage"]["trace"]["local"]["path"],
        tempo["metrics_generator"]["storage"]["path"],
    ]
    assert tempo["storage"]["trace"]["backend"] == "local"
    assert "tempo-data:/var/tempo" in services()["tempo"]["volumes"]
    assert all(path.startswith("/var/tempo/") for path in paths)


def test_search_cutoff_stays_below_the_backend_boundary() -> None:
    # Tempo refuses a query_end_cutoff above query_backend_after (15m by default); and
    # live_store.fail_on_high_lag expects it to be non-zero.
    cutoff = _tempo()["query_frontend"]["query_end_cutoff"]
    assert cutoff.endswith("s") and 0 < int(cutoff[:-1]) < 15 * 60
