"""Grafana provisioning: data sources that point at each other, and the Reservations dashboard."""

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

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
