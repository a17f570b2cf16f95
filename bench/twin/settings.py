"""The twin's configuration: the same environment variables as the system, read plainly.

``AMQP_URL``, ``AMQP_PREFETCH``, ``DATABASE_URL`` (``sqlite+aiosqlite:///path`` or
``postgresql+asyncpg://...``), ``DATABASE_SCHEMA``, ``SEED_FILE``, ``API_HOST``, ``API_PORT``,
``RESERVATION_REPLY_TIMEOUT``, ``OTEL_SDK_DISABLED`` and ``OTEL_SERVICE_NAME``. No pydantic:
the twin reads its settings once per process and needs no validation beyond types.
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_SEED = Path(__file__).resolve().parents[2] / "store" / "seed.json"


@dataclass(frozen=True)
class TwinSettings:
    amqp_url: str
    prefetch: int
    database_url: str
    database_schema: str | None
    seed_file: Path
    api_host: str
    api_port: int
    reply_timeout: float
    traced: bool

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def sqlite_path(self) -> str:
        """The file of a ``sqlite[+driver]:///path`` URL."""
        return self.database_url.split(":///", 1)[1]

    @property
    def postgres_dsn(self) -> str:
        """The URL as asyncpg takes it (no ``+driver``)."""
        scheme, rest = self.database_url.split("://", 1)
        return f"{scheme.split('+', 1)[0]}://{rest}"


def from_env(env: Mapping[str, str] | None = None) -> TwinSettings:
    env = os.environ if env is None else env
    return TwinSettings(
        amqp_url=env.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
        prefetch=int(env.get("AMQP_PREFETCH", "64")),
        database_url=env.get("DATABASE_URL", "sqlite+aiosqlite:///.data/twin.db"),
        database_schema=env.get("DATABASE_SCHEMA") or None,
        seed_file=Path(env.get("SEED_FILE") or DEFAULT_SEED),
        api_host=env.get("API_HOST", "127.0.0.1"),
        api_port=int(env.get("API_PORT", "8091")),
        reply_timeout=float(env.get("RESERVATION_REPLY_TIMEOUT", "5")),
        traced=env.get("OTEL_SDK_DISABLED", "").strip().lower() != "true",
    )
