"""End-to-end fixtures: an OTLP/gRPC receiver standing in for Tempo, and real processes."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.collector import OtlpReceiver, SpanStore
from tests import infra


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver(SpanStore()).start()
    yield receiver
    receiver.stop()


@pytest.fixture
def database_env(tmp_path: Path) -> dict[str, str]:
    """A SQLite file shared by the processes of one test."""
    return {"DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/e2e.db"}


@pytest.fixture
def api_port() -> int:
    return infra.free_port()
