"""Broker settings, read from the environment (``AMQP_URL``, ``AMQP_PREFETCH``,
``AMQP_CONNECT_TIMEOUT``).

The URL holds a password, so it is a ``SecretStr``: it never shows up in a repr or a log line.
"""

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class BrokerSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    amqp_url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/")
    # How many unacknowledged deliveries a consumer may hold at once.
    amqp_prefetch: int = Field(default=64, ge=1, le=10_000)
    # Seconds to wait for the broker at start-up before giving up with a clear error.
    amqp_connect_timeout: float = Field(default=10.0, gt=0)
