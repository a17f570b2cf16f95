"""Broker settings, read from the environment (``AMQP_URL``, ``AMQP_PREFETCH``,
``AMQP_CONNECT_TIMEOUT``).

The URL holds a password, so it is a ``SecretStr``: it never shows up in a repr or a log line.
"""

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from yarl import URL

# The URL's parameters aiormq reads as seconds, and the most each may be (AMQP's heartbeat is
# a short, 16 bits).
SECONDS_PARAMETERS = {"heartbeat": 65534, "timeout": 86400}


class BrokerSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    amqp_url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/")
    # How many unacknowledged deliveries a consumer may hold at once.
    amqp_prefetch: int = Field(default=64, ge=1, le=10_000)
    # Seconds to wait for the broker at start-up before giving up with a clear error.
    amqp_connect_timeout: float = Field(default=10.0, gt=0)

    @field_validator("amqp_url")
    @classmethod
    def _an_amqp_url(cls, url: SecretStr) -> SecretStr:
        """One that aio-pika can connect to: without a host it retried for ever, at DEBUG, and
        the service sat silent (a review's ``AMQP_URL=notaurl``). The message quotes nothing
        of the URL: it may hold a password."""
        try:
            parsed: URL | None = URL(url.get_secret_value())
            _ = parsed.port if parsed else None  # a port that is no number raises here
        except ValueError:
            parsed = None
        if parsed is None or parsed.scheme not in ("amqp", "amqps") or not parsed.host:
            raise ValueError(
                "not an AMQP URL with a host: amqp://USER:PASSWORD@HOST:PORT/VHOST "
                "(amqps:// for TLS)"
            )
        for name, highest in SECONDS_PARAMETERS.items():
            # aiormq reads one it cannot parse as 0: `?heartbeat=abc` turned heartbeats off,
            # silently (a review's), and a dead connection would go unnoticed.
            value = parsed.query.get(name)
            if value is not None and not (value.isdigit() and int(value) <= highest):
                raise ValueError(
                    f"its {name} parameter must be a whole number of seconds, 0 to {highest}"
                )
        return url
