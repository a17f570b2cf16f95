"""Reading one trace from Tempo's HTTP API, and linking to it in Grafana."""

import json
import re
from typing import Any
from urllib.parse import urlencode

import httpx
from google.protobuf import json_format

from cli.errors import CliError
from cli.spans import SpanRecord, from_otlp_json

TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
TEMPO_DATASOURCE_UID = "tempo"  # grafana/provisioning/datasources/datasources.yaml


def normalize_trace_id(value: str) -> str:
    trace_id = value.strip().lower().replace("-", "")
    if not TRACE_ID.match(trace_id):
        raise CliError(f"{value!r} is not a trace id", hint="a trace id is 32 hex characters.")
    return trace_id


class TempoClient:
    """``GET /api/v2/traces/{id}`` (Tempo ≥ 2.5, and 3). An unknown id is an empty trace: Tempo 3
    answers 200 ``{"trace":{},"metrics":{}}``, older versions 404; both mean "not (yet)"."""

    def __init__(self, base_url: str, timeout: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._timeout = timeout

    def fetch(self, trace_id: str) -> list[SpanRecord]:
        url = f"{self.base_url}/api/v2/traces/{trace_id}"
        try:
            response = httpx.get(url, headers={"Accept": "application/json"}, timeout=self._timeout)
        except httpx.HTTPError as error:
            raise CliError(
                f"Tempo is not reachable at {self.base_url} ({error or type(error).__name__}).",
                hint="start it with `docker compose up -d tempo`, set TEMPO_URL, or read the "
                "embedded collector's traces with `--source collector`.",
            ) from None
        if response.status_code == 404:
            return []
        if response.status_code != 200:
            raise CliError(f"Tempo answered {response.status_code}: {response.text[:200]}")
        try:
            document = response.json()
        except json.JSONDecodeError:
            raise CliError(f"Tempo answered something that is not JSON: {url}") from None
        return self.parse(document)

    @staticmethod
    def parse(document: dict[str, Any]) -> list[SpanRecord]:
        """Spans of a v2 answer; ``{"trace":{},"metrics":{}}`` (not found yet) gives none."""
        try:
            if not isinstance(document, dict):
                raise TypeError(type(document).__name__)
            return from_otlp_json(document)
        except (json_format.ParseError, TypeError, AttributeError):
            raise CliError("Tempo answered JSON that is not a trace document.") from None


def grafana_explore_url(grafana_url: str, trace_id: str) -> str:
    """The Explore view (Grafana 10+ ``panes`` URL) of one trace in the Tempo data source."""
    datasource = {"type": "tempo", "uid": TEMPO_DATASOURCE_UID}
    panes = {
        "trace": {
            "datasource": TEMPO_DATASOURCE_UID,
            "queries": [
                {
                    "refId": "A",
                    "datasource": datasource,
                    "queryType": "traceql",
                    "query": trace_id,
                }
            ],
            "range": {"from": "now-1h", "to": "now"},
        }
    }
    query = urlencode(
        {"schemaVersion": "1", "panes": json.dumps(panes, separators=(",", ":")), "orgId": "1"}
    )
    return f"{grafana_url.rstrip('/')}/explore?{query}"
