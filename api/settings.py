"""API settings, read from the environment."""

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MAX_HEAD_BYTES = 64 * 1024
DEFAULT_READ_TIMEOUT = 30.0


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8081, ge=1, le=65535)
    # Seconds POST /reservations waits for the worker's reply before answering 202.
    reservation_reply_timeout: float = Field(default=5.0, gt=0, le=60)
    # Requests larger than this are refused with 413 before they are read.
    max_body_bytes: int = Field(default=4096, ge=256)
    # A request line, headers and trailers larger than this are refused with 431
    # (api/http_protocol.py).
    max_head_bytes: int = Field(default=DEFAULT_MAX_HEAD_BYTES, ge=8 * 1024, le=1024 * 1024)
    # Seconds a request has to arrive whole, from its first byte; past that, 408 and the
    # connection closed (api/http_protocol.py).
    request_read_timeout: float = Field(default=DEFAULT_READ_TIMEOUT, gt=0, le=600)
    # Seconds a connection may sit idle, new or between two requests, before it is closed.
    # Longer than any client's or load balancer's idle timeout (httpx: 5 s; AWS ALB: 60 s):
    # otherwise the server may close an idle connection just as the client sends a request on
    # it, and a POST fails with "connection reset".
    keep_alive_timeout: int = Field(default=75, ge=1, le=3600)
    # "continue": an incoming traceparent becomes the parent (handy: curl -H traceparent:...).
    # "link": every request starts a new trace that links to the incoming context.
    incoming_trace: Literal["continue", "link"] = "continue"
    # Seconds a SIGTERM leaves the requests in flight to finish (uvicorn's graceful shutdown);
    # one still running then is answered 503 (api/http_protocol.py). The default outlasts an
    # unkeyed POST /reservations (publisher confirm and reply, 5 s each) with room for a keyed
    # one's transactions (DATABASE_TRANSACTION_TIMEOUT, 5 s each on PostgreSQL).
    api_shutdown_timeout: int = Field(default=25, ge=1, le=600)
    # Seconds an Idempotency-Key stays bound to its reservation (then it may be reused). At
    # most a year: an expiry past the database's integers failed every keyed POST with a 500.
    idempotency_key_ttl: int = Field(default=24 * 3600, ge=60, le=365 * 24 * 3600)
