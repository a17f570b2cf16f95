"""The bench runs the lean twin as one of its rows, with its own process handling, load, audit
and span count, on SQLite and on PostgreSQL (``--db``). One short level each: a check that the
row is wired, not a measurement (nothing here is timed)."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.plan import TWIN_TRACED, TWIN_UNTRACED, Plan
from bench.system_scenario import run_system
from devtools.vhosts import private_vhost
from tests.infra import Broker

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def bench_amqp_url(broker: Broker) -> Iterator[str]:
    """A vhost of the bench's own: the twin declares the system's queue names."""
    if broker.ctl is None:
        pytest.skip("rabbitmqctl cannot reach this broker")
    with private_vhost(broker.url, broker.ctl, "bench-test") as url:
        yield url


def _plan(scenario: str, db: str, amqp_url: str, postgres_url: str) -> Plan:
    return Plan(
        scenarios=[scenario],
        levels=[1],
        warmup=0.2,
        duration=0.5,
        db=db,
        postgres_url=postgres_url,
        amqp_url=amqp_url,
        source_root=ROOT,
        bench_root=ROOT,
        loadgen="builtin",
    )


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
async def test_the_twin_rows_run_with_every_check(
    db: str,
    bench_amqp_url: str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    postgres_url = request.getfixturevalue("postgres_url") if db == "postgres" else ""
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")  # spans arrive without a 5 s wait
    for scenario in (TWIN_UNTRACED, TWIN_TRACED):
        workdir = tmp_path / scenario
        workdir.mkdir()
        plan = _plan(scenario, db, bench_amqp_url, postgres_url)
        (level,) = await run_system(plan, scenario, workdir, lambda _: None, lambda: None)
        assert level.load.completed > 0 and level.load.errors == 0, level.load
        assert level.audit is not None
        assert level.audit["conserved"] and level.audit["all_fulfilled"], level.audit
        assert {"api", "worker", "fulfilment"} <= set(level.cpu_s)
        assert level.reservations["queues_drained"] == 1
        if scenario == TWIN_TRACED:
            assert level.spans is not None
            assert level.spans["per_request"] == 9
            assert level.spans["dropped"] == 0 and level.spans["received"] > 0
        else:
            assert level.spans is None
