"""Real processes for end-to-end and reliability tests: an OTLP/gRPC receiver standing in for
Tempo, the API and the workers. tests/conftest.py exposes these fixtures to every test."""

import asyncio
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cli.collector import OtlpReceiver, SpanStore
from devtools.addresses import free_port
from devtools.processes import CLEAN_EXIT_CODES
from tests import processes
from tests.system import purge_work_queues


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
    return free_port()


@dataclass
class System:
    """Real processes of one test; all stopped (and checked for a clean exit) at teardown."""

    base_env: dict[str, str]
    log_dir: Path
    api_url: str = ""
    running: list[processes.Process] = field(default_factory=list)
    migrated: bool = False

    def start_api(self, port: int, name: str = "api", **env: str) -> processes.Process:
        """Start an API process; give a second one its own ``name`` (and log file)."""
        self.migrate()
        api = processes.start_api(port, {**self.base_env, **env}, self.log_dir, name)
        self.api_url = f"http://127.0.0.1:{port}"
        self.running.append(api)
        return api

    def start_worker(self, module: str, name: str | None = None, **env: str) -> processes.Process:
        self.migrate()
        worker = processes.start_worker(module, {**self.base_env, **env}, self.log_dir, name)
        self.running.append(worker)
        return worker

    def migrate(self) -> None:
        """Migrate (and seed) the database once, before the first process starts."""
        if not self.migrated:
            processes.migrate(self.base_env, self.log_dir)
            self.migrated = True

    def seed(self, users: dict[str, int], items: dict[str, int]) -> None:
        """Seed these users and items instead of store/seed.json (call before starting)."""
        path = self.log_dir / "seed.json"
        path.write_text(json.dumps({"users": users, "items": items}))
        self.base_env["SEED_FILE"] = str(path)

    def stop_all(self) -> None:
        """Stop every process (even if one fails to exit cleanly), then check the exits."""
        stopped = [(process, process.stop()) for process in reversed(self.running)]
        self.running.clear()
        for process, code in stopped:
            assert code in CLEAN_EXIT_CODES, process.log()


@pytest.fixture
def make_system(
    amqp_url: str, receiver: OtlpReceiver, database_env: dict[str, str], tmp_path: Path
) -> Iterator[Callable[[], System]]:
    systems: list[System] = []
    asyncio.run(purge_work_queues(amqp_url))

    def make() -> System:
        env = processes.base_env(
            amqp_url, {**database_env, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint}
        )
        system = System(env, tmp_path)
        systems.append(system)
        return system

    yield make
    for system in systems:
        system.stop_all()


@pytest.fixture
def system(make_system: Callable[[], System], api_port: int) -> System:
    """The whole flow: API, credit-check worker and fulfilment worker."""
    system = make_system()
    system.start_worker("workers.credit_check")
    system.start_worker("workers.fulfilment")
    system.start_api(api_port)
    return system
