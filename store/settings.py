"""Database settings: ``DATABASE_URL``, ``DATABASE_SCHEMA``, ``DATABASE_POOL_SIZE``,
``DATABASE_TRANSACTION_TIMEOUT``, ``SEED_FILE``."""

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import make_url
from sqlalchemy.exc import ArgumentError

# The async drivers this project installs, one per database it supports.
DRIVERS = ("sqlite+aiosqlite", "postgresql+asyncpg")

SEED_FILE = Path(__file__).with_name("seed.json")


class StoreSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    # A file next to the working directory: every local process shares it.
    database_url: SecretStr = SecretStr("sqlite+aiosqlite:///.data/reservations.db")
    # PostgreSQL only: the schema to use (tests use a throwaway one). None = the default.
    database_schema: str | None = Field(default=None, pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    seed_file: Path = SEED_FILE
    # PostgreSQL connections per process, all kept open (no overflow beyond them): a connection
    # opened and closed per checkout costs the server more than the transaction does.
    database_pool_size: int = Field(default=20, ge=1, le=100)
    # PostgreSQL only: seconds a transaction may take, from waiting for a pooled connection to
    # its COMMIT, before it is abandoned and its connection closed (store.transactions). A
    # server that hangs, or a network that drops packets, raises no error by itself.
    database_transaction_timeout: float = Field(default=5.0, gt=0, le=300)

    @field_validator("database_url")
    @classmethod
    def _an_async_driver(cls, url: SecretStr) -> SecretStr:
        """A URL SQLAlchemy reads, naming one of :data:`DRIVERS`: ``postgresql://…`` asked
        for psycopg2, which is not installed, and ``bogus`` was a 40-line traceback (a
        review's). The message quotes nothing of the URL: it may hold a password."""
        try:
            driver = make_url(url.get_secret_value()).drivername
        except (ArgumentError, ValueError):  # a port that is no number: part of a password?
            driver = None
        if driver not in DRIVERS:
            raise ValueError(
                "use sqlite+aiosqlite:///PATH or postgresql+asyncpg://USER:PASSWORD@HOST:PORT/DB"
                " (the async drivers installed)" + (f", not {driver}://" if driver else "")
            )
        return url
