"""Every start-up failure a user can fix is one line from the service itself: what failed,
where, and the fix, with a pointer to the README's Troubleshooting, and no traceback unless
``LOG_LEVEL=DEBUG``. Each case on the real broker, the real databases and real processes."""

import asyncio
import os
import re
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import aio_pika
import pytest
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from yarl import URL

from devtools.addresses import free_port
from devtools.processes import Process, python_module
from devtools.vhosts import private_vhost
from service.startup import PREFIX, TROUBLESHOOTING
from store.migrate import migrate as migrate_store
from store.settings import StoreSettings
from tests import infra
from tests.cli.conftest import cli_env
from tests.cli.running import cli_once
from tests.processes import ROOT, migrate

pytestmark = pytest.mark.e2e

SERVICES = {"credit-check": "workers.credit_check", "api": "api"}
# Nothing listens for telemetry here: with an exporter, each failed start would spend the
# shutdown's 3 s bound trying to flush (tests/reliability/test_tracing_backend_down.py covers
# that bound).
NO_EXPORT = {f"OTEL_{signal}_EXPORTER": "none" for signal in ("TRACES", "LOGS", "METRICS")}
CASES = (
    "broker unreachable",
    "bad credentials",
    "unknown vhost",
    "database unreachable",
    "queue arguments",
)


@pytest.fixture(scope="module")
def conflicting_vhost(broker: infra.Broker) -> Iterator[str]:
    """A vhost where `credit-check` already exists with other arguments."""
    with ExitStack() as stack:
        url = broker.url
        if broker.ctl is not None:
            url = stack.enter_context(private_vhost(broker.url, broker.ctl, "startup"))
        asyncio.run(declare_a_classic_credit_check(url))
        yield url
        asyncio.run(delete_credit_check(url))


async def declare_a_classic_credit_check(url: str) -> None:
    """Not the quorum queue messaging/topology.py declares, and none of its arguments."""
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()
        await channel.declare_queue("credit-check", durable=True)


async def delete_credit_check(url: str) -> None:
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()
        await channel.queue_delete("credit-check")


@pytest.fixture(scope="module")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A database the services accept, so that the broker is what fails."""
    where = tmp_path_factory.mktemp("startup-db")
    url = f"sqlite+aiosqlite:///{where}/startup.db"
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "DATABASE_"))}
    migrate({**keep, "DATABASE_URL": url}, where)
    return url


def case_env(case: str, amqp_url: str, conflicting: str, database_url: str) -> dict[str, str]:
    broker = URL(amqp_url)
    env = {
        "AMQP_URL": amqp_url,
        "DATABASE_URL": database_url,
        "AMQP_CONNECT_TIMEOUT": "1",
        "API_HOST": "127.0.0.1",
        "API_PORT": str(free_port()),
        **NO_EXPORT,
        "LOG_FORMAT": "console",
    }
    if case == "broker unreachable":
        env["AMQP_URL"] = str(broker.with_port(free_port()))
    elif case == "bad credentials":
        env["AMQP_URL"] = str(broker.with_user("nobody").with_password("wrong"))
    elif case == "unknown vhost":
        env["AMQP_URL"] = str(broker.with_path("/no-such-vhost"))
    elif case == "database unreachable":
        env["DATABASE_URL"] = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/test"
    elif case == "queue arguments":
        env["AMQP_URL"] = conflicting
    return env


def start(name: str, module: str, env: dict[str, str], tmp_path: Path) -> Process:
    """``python -m module`` with ``env`` over this environment, but its telemetry and database
    settings; its log in ``tmp_path``."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "DATABASE_"))}
    return Process.start(
        name,
        python_module(module),
        {**keep, "PYTHONUNBUFFERED": "1", **env},
        log_path=tmp_path / f"{name}.log",
        cwd=ROOT,
    )


def start_and_fail(service: str, env: dict[str, str], tmp_path: Path) -> tuple[int, str]:
    process = start(service, SERVICES[service], env, tmp_path)
    code = process.wait_exit(within=45)
    return code, process.log()


def failure_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if PREFIX in line]


EXPECTED = {
    "broker unreachable": "RabbitMQ is unreachable at amqp://guest:***@127.0.0.1:",
    "bad credentials": "refused the credentials of user 'nobody': check the user and password",
    "unknown vhost": "would not open vhost 'no-such-vhost' for user ",
    "database unreachable": "The database at postgresql+asyncpg://postgres@127.0.0.1:",
    "queue arguments": "PRECONDITION_FAILED - inequivalent arg '",
}


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize("case", CASES)
def test_a_start_up_failure_is_one_line_with_the_fix(
    case: str,
    service: str,
    amqp_url: str,
    conflicting_vhost: str,
    migrated_sqlite: str,
    tmp_path: Path,
) -> None:
    env = case_env(case, amqp_url, conflicting_vhost, migrated_sqlite)
    code, log = start_and_fail(service, env, tmp_path)

    assert code == 1, log
    lines = failure_lines(log)
    assert len(lines) == 1, log
    assert "Application startup failed" not in log, log
    assert EXPECTED[case] in lines[0], lines[0]
    assert f"(see {TROUBLESHOOTING})" in lines[0], lines[0]
    assert "Traceback" not in log, log
    if case == "queue arguments":
        assert "for queue 'credit-check'" in lines[0], lines[0]
        assert "rabbitmqctl delete_queue -p " in lines[0] and " credit-check`" in lines[0]


def test_a_missing_postgresql_schema_is_one_line(
    postgres_url: str, amqp_url: str, tmp_path: Path, ref: str
) -> None:
    schema = f"missing_{ref}"
    env = {
        "AMQP_URL": amqp_url,
        "DATABASE_URL": postgres_url,
        "DATABASE_SCHEMA": schema,
        **NO_EXPORT,
        "LOG_FORMAT": "console",
    }
    code, log = start_and_fail("credit-check", env, tmp_path)
    assert code != 0, log
    assert len(failure_lines(log)) == 1 and "Traceback" not in log, log
    assert schema in failure_lines(log)[0], log


@pytest.mark.parametrize("service", SERVICES)
def test_a_database_or_role_that_does_not_exist_is_one_line(
    service: str, postgres_url: str, amqp_url: str, tmp_path: Path, ref: str
) -> None:
    """asyncpg raises these while connecting, unwrapped by SQLAlchemy."""
    missing = make_url(postgres_url).set(database=f"missing_{ref}")
    env = {
        "AMQP_URL": amqp_url,
        "DATABASE_URL": missing.render_as_string(hide_password=False),
        "API_PORT": str(free_port()),
        **NO_EXPORT,
        "LOG_FORMAT": "console",
    }
    code, log = start_and_fail(service, env, tmp_path)
    assert code != 0, log
    assert len(failure_lines(log)) == 1 and "Traceback" not in log, log
    assert f'InvalidCatalogNameError: database "missing_{ref}" does not exist' in log, log


def test_the_api_s_port_taken_is_one_line_and_exit_1(
    amqp_url: str, migrated_sqlite: str, tmp_path: Path
) -> None:
    env = case_env("none", amqp_url, "", migrated_sqlite)
    with socket.create_server(("127.0.0.1", int(env["API_PORT"]))):  # someone else holds it
        code, log = start_and_fail("api", env, tmp_path)
    assert code == 1, log
    lines = failure_lines(log)
    assert len(lines) == 1 and "Traceback" not in log, log
    assert f"the API cannot listen on 127.0.0.1:{env['API_PORT']}" in lines[0], lines[0]
    assert len(log.strip().splitlines()) == 1, log  # nothing from uvicorn: it never started


@pytest.mark.parametrize("sent", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_the_api_stops_at_once_when_asked_while_it_waits_for_the_broker(
    sent: signal.Signals, amqp_url: str, migrated_sqlite: str, tmp_path: Path
) -> None:
    """uvicorn looks at its signals only once the app has started: an API waiting for a
    broker that does not answer ignored SIGTERM for the whole ``AMQP_CONNECT_TIMEOUT``, then
    said it could not start."""
    connect_timeout = 60
    env = case_env("broker unreachable", amqp_url, "", migrated_sqlite)
    env["AMQP_CONNECT_TIMEOUT"] = str(connect_timeout)
    api = start("api", "api", env, tmp_path)
    try:
        api.wait_for_log("Waiting for application startup", within=30)
        api.popen.send_signal(sent)
        code = api.wait_exit(within=connect_timeout / 4)
    finally:
        api.kill()
    log = api.log()
    # As a stop after serving ends: SIGTERM raised again (uvicorn's way), Ctrl-C a clean exit.
    assert code == (-signal.SIGTERM if sent == signal.SIGTERM else 0), log
    assert "asked to stop while starting; stopped before serving" in log, log
    assert not failure_lines(log) and "Traceback" not in log, log
    assert "Application startup failed" not in log, log


async def _hold_until(
    postgres_url: str, schema: str, waiting: threading.Event, bound: threading.Event
) -> None:
    """Lock ``alembic_version`` until ``bound``, once another session waits on it."""
    engine = create_async_engine(
        postgres_url, connect_args={"server_settings": {"search_path": schema}}
    )
    try:
        async with engine.begin() as conn:
            await conn.execute(text("LOCK TABLE alembic_version IN ACCESS EXCLUSIVE MODE"))
            async with engine.connect() as probe:
                for _ in range(400):
                    blocked = "SELECT count(*) FROM pg_locks WHERE NOT granted"
                    if (await probe.execute(text(blocked))).scalar():
                        break
                    await asyncio.sleep(0.05)
            waiting.set()
            await asyncio.to_thread(bound.wait, 20)
    finally:
        await engine.dispose()


def test_an_api_beaten_to_its_port_after_its_check_says_so_in_one_line(
    postgres_url: str, amqp_url: str, tmp_path: Path, ref: str
) -> None:
    """Two APIs started at once on one port: both pass the port check, one binds. The other
    ran its start-up, then ended with uvicorn's bind error, not the line the check gives (a
    review's). Here its start-up check waits on a lock while the test takes the port."""
    schema = f"race_{ref}"
    settings = StoreSettings(database_url=SecretStr(postgres_url), database_schema=schema)
    asyncio.run(_create_and_migrate(settings))
    port = free_port()
    env = case_env("none", amqp_url, "", postgres_url) | {
        "DATABASE_SCHEMA": schema,
        "API_PORT": str(port),
    }
    waiting, bound = threading.Event(), threading.Event()
    holder = threading.Thread(
        target=lambda: asyncio.run(_hold_until(postgres_url, schema, waiting, bound))
    )
    holder.start()
    api = start("api", "api", env, tmp_path)
    try:
        assert waiting.wait(20), api.log()  # past its port check, waiting on the lock
        with socket.create_server(("127.0.0.1", port)):  # the other API
            bound.set()
            code = api.wait_exit(within=45)
    finally:
        bound.set()
        holder.join(20)
        api.kill()
        asyncio.run(_drop(settings))
    log = api.log()
    assert code == 1, log
    assert "api ready" in log, log  # its start-up ran: the bind is what failed
    lines = failure_lines(log)
    assert len(lines) == 1, log
    assert f"the API cannot listen on 127.0.0.1:{port}" in lines[0], lines[0]
    assert "error while attempting to bind" not in log, log


async def _create_and_migrate(settings: StoreSettings) -> None:
    engine = create_async_engine(settings.database_url.get_secret_value())
    async with engine.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{settings.database_schema}"'))
    await engine.dispose()
    await migrate_store(settings)


async def _drop(settings: StoreSettings) -> None:
    engine = create_async_engine(settings.database_url.get_secret_value())
    async with engine.begin() as conn:
        await conn.execute(text(f'DROP SCHEMA IF EXISTS "{settings.database_schema}" CASCADE'))
    await engine.dispose()


def test_log_level_debug_adds_the_traceback(
    amqp_url: str, migrated_sqlite: str, tmp_path: Path
) -> None:
    env = case_env("broker unreachable", amqp_url, "", migrated_sqlite) | {"LOG_LEVEL": "DEBUG"}
    code, log = start_and_fail("credit-check", env, tmp_path)
    assert code == 1
    assert len(failure_lines(log)) == 1 and "Traceback" in log, log


def test_reservations_run_reports_the_child_s_own_line(
    conflicting_vhost: str, tmp_path: Path
) -> None:
    done = cli_once(
        "run", env=cli_env(conflicting_vhost, tmp_path / ".data"), cwd=tmp_path, timeout=90
    )
    assert done.returncode == 1, done.stdout[-3000:]
    error = next(line for line in done.stderr.splitlines() if line.startswith("error: "))
    assert re.match(
        r"error: (credit-check|fulfilment|api) cannot start: RabbitMQ refused to declare the "
        r"topology of messaging/topology\.py: PRECONDITION_FAILED - inequivalent arg '",
        error,
    ), done.stderr
    assert "exited while starting" not in done.stderr
    assert "hint: README.md, Troubleshooting" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr


@pytest.mark.parametrize("service", [*SERVICES, "migrate"])
def test_a_setting_with_a_bad_value_is_one_line_naming_it(
    service: str, amqp_url: str, migrated_sqlite: str, tmp_path: Path
) -> None:
    """It was pydantic's traceback (a fault campaign: `DATABASE_SCHEMA=` stopped every service
    so). Each refused setting by the name the user set, no value quoted (a URL may hold a
    password), whatever the log level asks."""
    env = case_env("none", amqp_url, "", migrated_sqlite) | {
        "AMQP_PREFETCH": "many",
        "DATABASE_SCHEMA": "",
        "LOG_LEVEL": "LOUD",
        # No host: aio-pika retried it for ever, silently (a new user's `AMQP_URL=notaurl`).
        "AMQP_URL": "amqp://guest:s3cret@:5672/",
        # No async driver: psycopg2 is not installed, a 40-line traceback.
        "DATABASE_URL": "postgresql://postgres:s3cret@127.0.0.1/test",
        # OpenTelemetry's: the API's start-up failed with 42 lines, a worker's with a
        # traceback (a review's).
        "OTEL_TRACES_EXPORTER": "bogus",
        "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "-5",
    }
    module = "store.migrate" if service == "migrate" else SERVICES[service]
    process = start(service, module, env, tmp_path)
    code, log = process.wait_exit(within=45), process.log()
    assert code == 1, log
    [line] = log.strip().splitlines()
    prefix = "migrate: " if service == "migrate" else PREFIX
    assert line.startswith(f"{prefix}invalid setting"), line
    assert line.endswith("(see README.md#configuration)"), line
    refused = [
        "DATABASE_SCHEMA: String should match pattern",
        "DATABASE_URL: use sqlite+aiosqlite:///PATH or postgresql+asyncpg://",
    ]
    if service != "migrate":  # the tool reads the database's settings alone
        refused += [
            "AMQP_PREFETCH: Input should be a valid integer",
            "LOG_LEVEL: Input should be",
            "AMQP_URL: not an AMQP URL with a host",
            "OTEL_TRACES_EXPORTER='bogus': use 'otlp', 'console' or 'none'",
            "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT must be a non-negative integer",
        ]
    assert all(clause in line for clause in refused), line
    assert "s3cret" not in line and "Value error" not in line, line
