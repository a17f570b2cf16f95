"""loki/loki.yaml: only keys Loki 3.7.6 accepts, OTLP ingestion possible, mounted where read."""

from collections.abc import Iterator
from typing import Any

import pytest

from tests.static import load_yaml, mount_target, services

pytestmark = pytest.mark.static

CONFIG = "loki/loki.yaml"

# Allow-lists from the v3.7.6 tag of grafana/loki: the yaml tags of Config in pkg/loki/loki.go
# (top level), dskit's server.Config (vendored), pkg/loki/common/common.go (common, its
# Storage and FilesystemConfig), pkg/util/ring/ring_config.go (RingConfig), dskit kv.Config,
# pkg/storage/config/schema_config.go (PeriodConfig, IndexPeriodicTableConfig),
# pkg/validation/limits.go (Limits), pkg/loghttp/push/otlp_config.go (OTLPConfig and its
# attribute blocks) and pkg/analytics/reporter.go. Loki refuses unknown keys at start-up.
TOP_LEVEL = set(
    """
    target auth_enabled http_prefix ballast_bytes server internal_server ui distributor querier
    query_engine query_scheduler frontend query_range ruler ruler_storage ingester_client
    ingester pattern_ingester index_gateway bloom_build bloom_gateway storage_config
    chunk_store_config schema_config compactor compactor_client compactor_grpc_client
    limits_config frontend_worker table_manager memberlist kafka_config dataobj ingest_limits
    ingest_limits_frontend ingest_limits_frontend_client runtime_config operational_config
    tracing analytics profiling tenant_limits_allow_publish legacy_read_target common
    shutdown_delay metrics_namespace
    """.split()
)
BLOCKS: dict[tuple[str, ...], set[str]] = {
    ("server",): set(
        """
        cluster_validation create_new_traces graceful_shutdown_timeout
        grpc_collect_max_streams_by_conn grpc_listen_address grpc_listen_conn_limit
        grpc_listen_network grpc_listen_port grpc_server_keepalive_time
        grpc_server_keepalive_timeout grpc_server_max_concurrent_streams
        grpc_server_max_connection_age grpc_server_max_connection_age_grace
        grpc_server_max_connection_idle grpc_server_max_recv_msg_size
        grpc_server_max_send_msg_size grpc_server_min_time_between_pings grpc_server_num_workers
        grpc_server_ping_without_stream_allowed grpc_server_recv_buffer_pools_enabled
        grpc_server_stats_tracking_enabled grpc_tls_config http_listen_address
        http_listen_conn_limit http_listen_network http_listen_port
        http_log_closed_connections_without_response_enabled http_path_prefix
        http_server_idle_timeout http_server_read_header_timeout http_server_read_timeout
        http_server_write_timeout http_tls_config log_format log_level
        log_request_at_info_level_enabled log_request_exclude_headers_list log_request_headers
        log_source_ips_enabled log_source_ips_full log_source_ips_header log_source_ips_regex
        proxy_protocol_enabled register_instrumentation
        report_grpc_codes_in_instrumentation_label_enabled tls_cipher_suites tls_min_version
        trace_request_exclude_headers_list trace_request_headers
        """.split()
    ),
    ("common",): set(
        """
        path_prefix storage persist_tokens replication_factor ring instance_interface_names
        instance_addr compactor_address compactor_grpc_address scratch_path
        """.split()
    ),
    ("common", "storage"): set(
        "alibabacloud azure bos congestion_control cos filesystem gcs hedging object_store "
        "s3 swift".split()
    ),
    ("common", "storage", "filesystem"): {"chunks_directory", "rules_directory"},
    ("common", "ring"): set(
        """
        heartbeat_period heartbeat_timeout instance_addr instance_availability_zone
        instance_enable_ipv6 instance_id instance_interface_names instance_port kvstore
        num_tokens replication_factor tokens_file_path zone_awareness_enabled
        """.split()
    ),
    ("common", "ring", "kvstore"): {"store", "prefix", "consul", "etcd", "multi"},
    ("limits_config",): set(
        """
        allow_deletes allow_structured_metadata block_ingestion_policy_until
        block_ingestion_status_code block_ingestion_until blocked_queries bloom_block_encoding
        bloom_build_builder_response_timeout bloom_build_max_builders
        bloom_build_task_max_retries bloom_creation_enabled bloom_gateway_enable_filtering
        bloom_max_block_size bloom_max_bloom_size bloom_planning_strategy bloom_prefetch_blocks
        bloom_split_series_keyspace_by bloom_task_target_series_chunk_size cardinality_limit
        creation_grace_period debug_engine_streams debug_engine_tasks deletion_mode
        discover_generic_fields discover_log_levels discover_service_name
        enable_multi_variant_queries enforced_labels engine_results_cache_time_bucket_interval
        increment_duplicate_timestamp index_gateway_max_capacity index_gateway_shard_size
        ingestion_burst_size_mb ingestion_partitions_tenant_shard_size ingestion_rate_mb
        ingestion_rate_strategy log_level_fields log_level_from_json_max_depth
        max_cache_freshness_per_query max_chunks_per_query max_concurrent_tail_requests
        max_entries_limit_per_query max_global_streams_per_user max_label_name_length
        max_label_names_per_series max_label_value_length max_line_size max_line_size_truncate
        max_line_size_truncate_identifier max_metadata_cache_freshness max_querier_bytes_read
        max_queriers_per_tenant max_query_bytes_read max_query_capacity max_query_length
        max_query_lookback max_query_parallelism max_query_range max_query_series
        max_scan_task_parallelism max_stats_cache_freshness max_streams_matchers_per_query
        max_streams_per_user max_structured_metadata_entries_count max_structured_metadata_size
        metric_aggregation_enabled min_sharding_lookback minimum_labels_number otlp_config
        pattern_ingester_tokenizable_json_fields_append
        pattern_ingester_tokenizable_json_fields_default
        pattern_ingester_tokenizable_json_fields_delete pattern_persistence_enabled
        pattern_persistence_granularity pattern_rate_threshold per_stream_rate_limit
        per_stream_rate_limit_burst per_tenant_override_config per_tenant_override_period
        policy_enforced_labels policy_override_limits policy_stream_mapping
        query_ready_index_num_days query_timeout recent_metadata_query_window
        reject_old_samples reject_old_samples_max_age required_labels retention_period
        retention_stream ruler_alertmanager_config ruler_enable_wal_replay
        ruler_max_rule_groups_per_tenant ruler_max_rules_per_rule_group
        ruler_remote_evaluation_max_response_size ruler_remote_evaluation_timeout
        ruler_remote_write_config ruler_remote_write_disabled ruler_remote_write_headers
        ruler_remote_write_queue_batch_send_deadline ruler_remote_write_queue_capacity
        ruler_remote_write_queue_max_backoff ruler_remote_write_queue_max_samples_per_send
        ruler_remote_write_queue_max_shards ruler_remote_write_queue_min_backoff
        ruler_remote_write_queue_min_shards ruler_remote_write_queue_retry_on_ratelimit
        ruler_remote_write_relabel_configs ruler_remote_write_sigv4_config
        ruler_remote_write_timeout ruler_remote_write_url ruler_tenant_shard_size
        s3_sse_kms_encryption_context s3_sse_kms_key_id s3_sse_type shard_aggregations
        shard_streams simulated_push_latency split_ingester_queries_by_interval
        split_instant_metric_queries_by_interval split_metadata_queries_by_interval
        split_queries_by_interval split_recent_metadata_queries_by_interval
        tsdb_max_bytes_per_shard tsdb_max_query_parallelism tsdb_precompute_chunks
        tsdb_sharding_strategy unordered_writes use_owned_stream_count volume_enabled
        volume_max_series        """.split()
    ),
    ("limits_config", "otlp_config"): {
        "resource_attributes",
        "scope_attributes",
        "log_attributes",
        "severity_text_as_label",
    },
    ("limits_config", "otlp_config", "resource_attributes"): {
        "ignore_defaults",
        "attributes_config",
    },
    ("analytics",): {"reporting_enabled", "usage_stats_url", "proxy_url", "tls_config"},
}
PERIOD = {"from", "store", "object_store", "schema", "index", "chunks", "row_shards"}
INDEX = {"path_prefix", "prefix", "period", "tags"}
ATTRIBUTES_CONFIG = {"action", "attributes", "regex"}


def _config() -> dict[str, Any]:
    config: dict[str, Any] = load_yaml(CONFIG)
    return config


def _block(path: tuple[str, ...]) -> Any:
    node: Any = _config()
    for key in path:
        node = node[key]
    return node


def _unknown_keys() -> Iterator[str]:
    yield from (f"{key} (top level)" for key in set(_config()) - TOP_LEVEL)
    for path, allowed in BLOCKS.items():
        try:
            block = _block(path)
        except KeyError:
            continue
        yield from (f"{'.'.join(path)}.{key}" for key in set(block) - allowed)
    for period in _config()["schema_config"]["configs"]:
        yield from (f"schema_config.configs[].{key}" for key in set(period) - PERIOD)
        yield from (f"schema_config.configs[].index.{k}" for k in set(period["index"]) - INDEX)
    resource = _config()["limits_config"]["otlp_config"]["resource_attributes"]
    for entry in resource["attributes_config"]:
        yield from (f"attributes_config[].{key}" for key in set(entry) - ATTRIBUTES_CONFIG)


def test_only_keys_loki_3_7_6_accepts() -> None:
    assert list(_unknown_keys()) == []


def test_the_image_is_the_version_the_allow_lists_come_from() -> None:
    assert services()["loki"]["image"] == "grafana/loki:3.7.6"


def test_otlp_ingestion_has_structured_metadata_on_a_v13_tsdb_schema() -> None:
    (period,) = _config()["schema_config"]["configs"]
    assert (period["store"], period["schema"], period["object_store"]) == (
        "tsdb",
        "v13",
        "filesystem",
    )
    assert _config()["limits_config"]["allow_structured_metadata"] is True


def test_only_service_name_is_an_index_label() -> None:
    resource = _config()["limits_config"]["otlp_config"]["resource_attributes"]
    assert resource["ignore_defaults"] is True
    indexed = [e for e in resource["attributes_config"] if e["action"] == "index_label"]
    assert [e["attributes"] for e in indexed] == [["service.name"]]


def test_loki_reads_the_mounted_config_and_stores_in_its_volume() -> None:
    loki = services()["loki"]
    target = mount_target("loki", CONFIG)
    assert f"-config.file={target}" in loki["command"]
    path_prefix = _config()["common"]["path_prefix"]
    assert f"loki-data:{path_prefix}" in loki["volumes"]
    filesystem = _config()["common"]["storage"]["filesystem"]
    assert all(path.startswith(path_prefix + "/") for path in filesystem.values())


def test_the_http_port_is_the_one_grafana_and_the_apps_use() -> None:
    port = _config()["server"]["http_listen_port"]
    assert f"{port}:{port}" in " ".join(services()["loki"]["ports"])
