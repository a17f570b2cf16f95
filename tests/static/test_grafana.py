"""Grafana provisioning: data sources that point at each other, and the Reservations dashboard."""

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, Sum

from messaging.metrics import MessagingMetrics, attributes
from tests.static import environment, load_json, load_yaml, mount_target, services

pytestmark = pytest.mark.static

DATASOURCES = "grafana/provisioning/datasources/datasources.yaml"
DASHBOARD = "grafana/dashboards/reservations.json"


def _datasources() -> dict[str, dict[str, Any]]:
    listed = load_yaml(DATASOURCES)["datasources"]
    by_uid = {source["uid"]: source for source in listed}
    assert len(by_uid) == len(listed), "duplicate data source uid"
    return by_uid


def _dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = load_json(DASHBOARD)
    return dashboard


def _panels() -> Iterator[dict[str, Any]]:
    for panel in _dashboard()["panels"]:
        yield panel
        yield from panel.get("panels", [])


def _targets(kind: str) -> list[dict[str, Any]]:
    return [
        target
        for panel in _panels()
        for target in panel.get("targets", [])
        if target["datasource"]["type"] == kind
    ]


def test_tempo_is_the_default_and_links_to_prometheus() -> None:
    sources = _datasources()
    assert [uid for uid, s in sources.items() if s.get("isDefault")] == ["tempo"]
    tempo = sources["tempo"]["jsonData"]
    assert sources[tempo["serviceMap"]["datasourceUid"]]["type"] == "prometheus"
    assert sources[tempo["tracesToMetrics"]["datasourceUid"]]["type"] == "prometheus"
    assert tempo["nodeGraph"]["enabled"] is True
    assert tempo["search"]["hide"] is False


def test_traces_to_metrics_queries_use_tempo_span_metrics() -> None:
    queries = _datasources()["tempo"]["jsonData"]["tracesToMetrics"]["queries"]
    assert queries
    for query in queries:
        assert "traces_spanmetrics_" in query["query"]
        # Grafana expands $VAR in provisioning files: template variables need "$$".
        assert re.search(r"(?<!\$)\$(?!\$)", query["query"]) is None, query["query"]


def test_prometheus_exemplars_open_traces_in_tempo() -> None:
    sources = _datasources()
    (destination,) = sources["prometheus"]["jsonData"]["exemplarTraceIdDestinations"]
    assert sources[destination["datasourceUid"]]["type"] == "tempo"
    # Tempo's metrics-generator labels exemplars "traceID" (trace_id_label_name default).
    assert destination["name"] == "traceID"


def test_data_source_urls_reach_the_compose_services() -> None:
    tempo_port = load_yaml("tempo/tempo.yaml")["server"]["http_listen_port"]
    loki_port = load_yaml("loki/loki.yaml")["server"]["http_listen_port"]
    expected = {
        "tempo": ("tempo", tempo_port),
        "prometheus": ("prometheus", 9090),
        "loki": ("loki", loki_port),
    }
    for uid, source in _datasources().items():
        url = urlsplit(source["url"])
        assert (url.hostname, url.port) == expected[uid]
        assert url.hostname in services()


def test_provisioning_folders_are_mounted_where_grafana_reads_them() -> None:
    provider = load_yaml("grafana/provisioning/dashboards/dashboards.yaml")["providers"][0]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == mount_target("grafana", "grafana/dashboards")
    for kind in ("datasources", "dashboards"):
        target = mount_target("grafana", f"grafana/provisioning/{kind}")
        assert target == f"/etc/grafana/provisioning/{kind}"


def test_anonymous_access_is_on_with_a_stated_role() -> None:
    env = environment(services()["grafana"])
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] in {"Editor", "Admin"}


def test_dashboard_is_the_reservations_dashboard() -> None:
    dashboard = _dashboard()
    assert (dashboard["uid"], dashboard["title"]) == ("reservations", "Reservations")
    ids = [panel["id"] for panel in _panels()]
    assert len(ids) == len(set(ids)), "duplicate panel id"
    assert all("gridPos" in panel for panel in _panels())


def test_every_data_source_reference_exists_with_its_type() -> None:
    sources = _datasources()
    references = [panel["datasource"] for panel in _panels() if "datasource" in panel]
    references += [
        target["datasource"] for panel in _panels() for target in panel.get("targets", [])
    ]
    references += [v["datasource"] for v in _dashboard()["templating"]["list"] if "datasource" in v]
    assert len(references) > 10
    for reference in references:
        assert reference["uid"] in sources, reference
        assert sources[reference["uid"]]["type"] == reference["type"], reference


def test_dashboard_plots_span_metrics_broker_latency_and_queue_depth() -> None:
    expressions = " ".join(target["expr"] for target in _targets("prometheus"))
    for metric in (
        "traces_spanmetrics_calls_total",
        "traces_spanmetrics_latency_bucket",
        "traces_service_graph_request_messaging_system_seconds_bucket",
        "rabbitmq_queue_messages_ready",
        "rabbitmq_queue_messages_unacked",
    ):
        assert metric in expressions, metric
    assert 'status_code="STATUS_CODE_ERROR"' in expressions  # span metrics' error label value
    assert "by (le, service, span_name)" in expressions  # duration per span name


def test_span_metric_labels_are_ones_tempo_produces() -> None:
    # Intrinsic labels, plus the configured dimensions with dots turned into underscores.
    span_metrics = load_yaml("tempo/tempo.yaml")["metrics_generator"]["processor"]["span_metrics"]
    produced = {"service", "span_name", "span_kind", "status_code", "le", "job", "instance"}
    produced |= {dimension.replace(".", "_") for dimension in span_metrics["dimensions"]}
    for target in _targets("prometheus"):
        for selector in re.findall(r"traces_spanmetrics_\w+\{([^}]*)\}", target["expr"]):
            labels = set(re.findall(r"(\w+)\s*(?:=~|!=|!~|=)", selector))
            assert labels <= produced, f"{labels - produced} in {target['expr']}"


def test_dashboard_lists_recent_and_failed_traces_with_traceql() -> None:
    queries = [target["query"] for target in _targets("tempo")]
    assert all(target["queryType"] == "traceql" for target in _targets("tempo"))
    assert any('name = "POST /reservations"' in query for query in queries)
    assert any("status = error" in query for query in queries)
    tables = [panel for panel in _panels() if panel.get("datasource", {}).get("type") == "tempo"]
    assert tables and all(panel["type"] == "table" for panel in tables)


def test_loki_lines_open_their_trace_in_tempo() -> None:
    sources = _datasources()
    (field,) = sources["loki"]["jsonData"]["derivedFields"]
    assert sources[field["datasourceUid"]]["type"] == "tempo"
    # Loki's OTLP ingestion keeps the record's trace id as structured metadata "trace_id";
    # matcherType "label" reads it there instead of searching the line's text.
    assert (field["matcherType"], field["matcherRegex"]) == ("label", "trace_id")
    assert field["url"] == "$${__value.raw}"  # "$$" is a literal "$" in provisioning files


def test_tempo_spans_open_their_logs_in_loki_by_service_and_trace() -> None:
    sources = _datasources()
    link = sources["tempo"]["jsonData"]["tracesToLogsV2"]
    assert sources[link["datasourceUid"]]["type"] == "loki"
    # The span's service.name maps to the one label Loki indexes (loki/loki.yaml).
    otlp = load_yaml("loki/loki.yaml")["limits_config"]["otlp_config"]["resource_attributes"]
    (indexed,) = [
        e["attributes"] for e in otlp["attributes_config"] if e["action"] == "index_label"
    ]
    assert link["tags"] == [{"key": attr, "value": attr.replace(".", "_")} for attr in indexed]
    assert link["customQuery"] is True
    assert link["query"] == '{$${__tags}} | trace_id="$${__trace.traceId}"'


def test_logs_panel_shows_the_selected_services() -> None:
    panels = [panel for panel in _panels() if panel["type"] == "logs"]
    assert panels and all(panel["datasource"]["uid"] == "loki" for panel in panels)
    expressions = [target["expr"] for target in _targets("loki")]
    assert expressions == ['{service_name=~"$service"}']
    # Loki refuses a selector that matches the empty string: "All" must not be ".*".
    (service,) = [v for v in _dashboard()["templating"]["list"] if v["name"] == "service"]
    assert service["allValue"] == ".+"


def _prometheus_names() -> tuple[set[str], set[str]]:
    """The series names and labels Prometheus makes of the apps' OTLP metrics
    (UnderscoreEscapingWithSuffixes, prometheus/prometheus.yml)."""
    reader = InMemoryMetricReader()
    instruments = MessagingMetrics(MeterProvider(metric_readers=[reader]))
    metric_attributes = attributes("publish", "send", "d", error_type="E", server_address="h")
    metric_attributes |= {"server.port": 5672}
    instruments.sent(0.1, metric_attributes)
    instruments.processed(0.1, metric_attributes)
    data = reader.get_metrics_data()
    assert data is not None
    metrics = [m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics]
    described = [(m.name, m.unit, isinstance(m.data, Sum)) for m in metrics]
    described.append(("http.server.request.duration", "s", False))
    names = set()
    for name, unit, counter in described:
        base = name.replace(".", "_") + ("_seconds" if unit == "s" else "")
        names |= (
            {base + "_total"} if counter else {f"{base}_{s}" for s in ("bucket", "sum", "count")}
        )
    labels = {key.replace(".", "_") for key in metric_attributes} | {"job", "instance", "le"}
    labels |= {"http_route", "http_request_method", "http_response_status_code", "url_scheme"}
    return names, labels


def test_metric_panels_read_the_apps_otlp_metrics_by_their_prometheus_names() -> None:
    names, labels = _prometheus_names()
    expressions = " ".join(target["expr"] for target in _targets("prometheus"))
    # A series name is followed by its selector or range; labels and values are not.
    used = set(re.findall(r"\b((?:messaging|http_server)_\w+)\s*[{\[]", expressions))
    assert used <= names, used - names
    for metric in (
        "messaging_client_operation_duration_seconds_bucket",
        "messaging_process_duration_seconds_bucket",
        "messaging_client_sent_messages_total",
        "messaging_client_consumed_messages_total",
        "http_server_request_duration_seconds_bucket",
    ):
        assert metric in used, metric
    for target in _targets("prometheus"):
        if not re.search(r"\b(?:messaging|http_server)_\w+\s*[{\[]", target["expr"]):
            continue
        assert 'job=~"$service"' in target["expr"], target["expr"]  # job is service.name
        grouped = re.findall(r"by \(([^)]*)\)", target["expr"])
        selected = re.findall(r"(\w+)\s*(?:=~|!=|!~|=)", target["expr"])
        used_labels = {label.strip() for group in grouped for label in group.split(",")}
        assert used_labels | set(selected) <= labels, (used_labels | set(selected)) - labels


# What Grafana 13 reads from a provisioned data source, and from each type's jsonData: a key
# spelt otherwise (``filterByTraceId``, ``serviceMaps``) is kept and silently ignored, and
# the link it was for is missing from the UI. From grafana/grafana: the provisioning file's
# fields (pkg/services/provisioning/datasources/types.go, upsertDataSourceFromConfig), the
# Tempo data source's jsonData (public/app/plugins/datasource/tempo/types.ts,
# TempoJsonData, and datasource.ts), the trace links
# (packages/grafana-o11y-ds-frontend/src/TraceToLogs/TraceToLogsSettings.tsx,
# TraceToLogsOptionsV2; TraceToMetrics/TraceToMetricsSettings.tsx, TraceToMetricsOptions),
# Prometheus's PromOptions and ExemplarTraceIdDestination (packages/grafana-prometheus
# src/types.ts), Loki's LokiOptions and DerivedFieldConfig
# (public/app/plugins/datasource/loki/types.ts).
PROVISIONED_FIELDS = {
    "name",
    "type",
    "uid",
    "access",
    "url",
    "orgId",
    "isDefault",
    "editable",
    "jsonData",
    "secureJsonData",
    "basicAuth",
    "basicAuthUser",
    "user",
    "database",
    "withCredentials",
    "version",
}
TRACE_LINK_KEYS = {
    "tracesToLogsV2": {
        "datasourceUid",
        "tags",
        "spanStartTimeShift",
        "spanEndTimeShift",
        "filterByTraceID",
        "filterBySpanID",
        "query",
        "customQuery",
    },
    "tracesToMetrics": {
        "datasourceUid",
        "tags",
        "queries",
        "spanStartTimeShift",
        "spanEndTimeShift",
    },
}
JSON_DATA_KEYS = {
    "tempo": {
        "tracesToLogsV2",
        "tracesToMetrics",
        "tracesToProfiles",
        "serviceMap",
        "search",
        "nodeGraph",
        "spanBar",
        "tagLimit",
        "traceQuery",
        "streamingEnabled",
        "timeRangeForTags",
    },
    "prometheus": {
        "httpMethod",
        "timeInterval",
        "queryTimeout",
        "exemplarTraceIdDestinations",
        "prometheusType",
        "prometheusVersion",
        "cacheLevel",
        "incrementalQuerying",
        "disableRecordingRules",
        "manageAlerts",
    },
    "loki": {"maxLines", "derivedFields", "alertmanager", "keepCookies", "predefinedOperations"},
}
NESTED_KEYS = {
    ("tempo", "serviceMap"): {"datasourceUid", "histogramType"},
    ("tempo", "nodeGraph"): {"enabled"},
    ("tempo", "search"): {"hide", "filters"},
    ("tempo", "streamingEnabled"): {"search", "metrics"},
    ("prometheus", "exemplarTraceIdDestinations"): {
        "name",
        "datasourceUid",
        "url",
        "urlDisplayLabel",
    },
    (
        "loki",
        "derivedFields",
    ): {
        "name",
        "matcherRegex",
        "matcherType",
        "url",
        "urlDisplayLabel",
        "datasourceUid",
        "targetBlank",
    },
}


def test_every_data_source_field_is_one_grafana_reads() -> None:
    for uid, source in _datasources().items():
        assert set(source) <= PROVISIONED_FIELDS, f"{uid}: {set(source) - PROVISIONED_FIELDS}"
        json_data = source.get("jsonData", {})
        allowed = JSON_DATA_KEYS[source["type"]]
        assert set(json_data) <= allowed, f"{uid}: jsonData {set(json_data) - allowed}"
        for key, value in json_data.items():
            fields = TRACE_LINK_KEYS.get(key) or NESTED_KEYS.get((source["type"], key))
            if fields is None:
                continue
            for entry in value if isinstance(value, list) else [value]:
                assert set(entry) <= fields, f"{uid}: {key} {set(entry) - fields}"


def test_every_provisioning_file_is_the_version_grafana_reads() -> None:
    for path in (DATASOURCES, "grafana/provisioning/dashboards/dashboards.yaml"):
        assert load_yaml(path)["apiVersion"] == 1, path
