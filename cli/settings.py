"""Where the CLI finds things, from the environment (and overridden by command options).

The same variables as the services (``AMQP_URL``, ``OTEL_EXPORTER_OTLP_ENDPOINT``) plus the
addresses of the API, Tempo and Grafana, and where the embedded collector keeps its traces.
"""

from pathlib import Path

import httpx
from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from devtools.addresses import DEFAULT_AMQP_URL, LOCALHOST, is_loopback

DEFAULT_API_URL = "http://127.0.0.1:8081"
DEFAULT_TEMPO_URL = "http://localhost:3200"
COLLECTOR_HOST = LOCALHOST  # loopback only: the collector accepts spans from anyone
# OTLP/gRPC's port: where the SDK exports without OTEL_EXPORTER_OTLP_ENDPOINT.
DEFAULT_OTLP_PORT = 4317


class CliSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    amqp_url: str = DEFAULT_AMQP_URL
    api_url: str = DEFAULT_API_URL
    tempo_url: str = DEFAULT_TEMPO_URL
    # e.g. http://localhost:3000; when unset, no Explore link is printed.
    grafana_url: str | None = None
    # Set: the services export there and no embedded collector starts.
    otel_exporter_otlp_endpoint: str | None = None
    database_url: str | None = None
    data_dir: Path = Field(
        default=Path(".data"), validation_alias=AliasChoices("RESERVATIONS_DATA_DIR")
    )
    collector_port: int = Field(
        default=DEFAULT_OTLP_PORT,
        ge=0,
        le=65535,
        validation_alias=AliasChoices("RESERVATIONS_COLLECTOR_PORT"),
    )
    # How many traces the embedded collector keeps (in memory, and on disk across runs).
    collector_max_traces: int = Field(
        default=500, ge=1, validation_alias=AliasChoices("RESERVATIONS_COLLECTOR_MAX_TRACES")
    )

    @field_validator("api_url")
    @classmethod
    def _an_http_url(cls, url: str) -> str:
        """An http(s) URL with a host and a port TCP has, without the trailing slash that made
        ``/readyz`` into ``//readyz`` (a 404: `run` and `demo` waited 60 s for nothing)."""
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise ValueError(f"not a URL ({exc})") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError(f"use http://host:port, as {DEFAULT_API_URL}")
        if parsed.port is not None and not 0 < parsed.port <= 65535:
            raise ValueError(f"port {parsed.port} is not one TCP has (1-65535)")
        return url.rstrip("/")

    @property
    def api_port(self) -> int:
        url = httpx.URL(self.api_url)
        return url.port or (443 if url.scheme == "https" else 80)

    def children_database_url(self) -> str:
        """``DATABASE_URL`` if set, else a SQLite file in the data dir (shared by children)."""
        if self.database_url:
            return self.database_url
        # Relative stays relative: the children run in this process's working directory.
        return f"sqlite+aiosqlite:///{self.data_dir / 'reservations.db'}"


def is_loopback_url(url: str) -> bool:
    return is_loopback(httpx.URL(url).host)
