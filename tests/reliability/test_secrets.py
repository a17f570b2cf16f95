"""Secrets never leak: the AMQP and the database passwords appear in no log line, no span
(attribute, event, status) and no HTTP answer, on the happy path, on every error path, across
a broker reconnect, and when a worker cannot start; with every service logging at DEBUG.

Each password is unique and random for this test, so finding it anywhere is a leak. The
RabbitMQ user exists only for this test, in this session's vhost; PostgreSQL runs with trust
authentication, so it accepts the (random) password in the URL without checking it, which is
exactly what lets us watch where that URL travels.
"""

import json
import secrets
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from tenacity import Retrying
from yarl import URL

from cli.collector import OtlpReceiver
from tests import infra, processes
from tests.stack import System
from tests.waiting import eventually

GOOD = {"username": "alice", "item_id": "book-1"}


@dataclass(frozen=True)
class AmqpAccount:
    user: str
    password: str
    url: str


@pytest.fixture
def amqp_account(broker: infra.Broker) -> Iterator[AmqpAccount]:
    """A RabbitMQ user with a random password, allowed only on this session's vhost."""
    user = f"secrets-{uuid.uuid4().hex[:8]}"
    password = f"amqp-{secrets.token_hex(16)}"
    broker.rabbitmqctl("add_user", user, password)
    try:
        broker.rabbitmqctl("set_permissions", "-p", broker.vhost, user, ".*", ".*", ".*")
        url = str(URL(broker.url).with_user(user).with_password(password))
        yield AmqpAccount(user, password, url)
    finally:
        broker.rabbitmqctl("delete_user", user)


@pytest.fixture
async def pg_env(postgres_url: str) -> AsyncIterator[tuple[dict[str, str], str]]:
    """DATABASE_URL with a random password (trust auth ignores it) and a throwaway schema."""
    password = f"pg-{secrets.token_hex(16)}"
    schema = f"test_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(postgres_url)
    async with admin.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        url = str(URL(postgres_url).with_password(password))
        yield {"DATABASE_URL": url, "DATABASE_SCHEMA": schema}, password
    finally:
        async with admin.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await admin.dispose()


def _until(within: float) -> Retrying:
    return eventually(within, every=0.2, retry_on=(AssertionError, httpx.HTTPError))


def _pending(impatient_url: str) -> list[httpx.Response]:
    """202s: asked while no credit-check worker runs, so no reply can come in time."""
    with (
        httpx.Client(base_url=impatient_url, timeout=15) as impatient,
        ThreadPoolExecutor(max_workers=3) as pool,
    ):
        pending = list(pool.map(lambda _: impatient.post("/reservations", json=GOOD), range(3)))
    assert [p.status_code for p in pending] == [202] * 3, [p.text for p in pending]
    return pending


def _exercise(api_url: str, pending: list[httpx.Response]) -> list[httpx.Response]:
    """Every other kind of answer the API gives, and the final state of the 202s."""
    with httpx.Client(base_url=api_url, timeout=15) as client:
        answers = [
            client.post("/reservations", json=GOOD),  # 201
            client.post("/reservations", json={"username": "bob", "item_id": "book-2"}),  # 409
            client.post("/reservations", json={"username": "nobody", "item_id": "book-1"}),
            client.post("/reservations", json={"username": "alice", "item_id": "nothing"}),
            client.post("/reservations", json={"username": 1, "extra": True}),  # 422
            client.post(
                "/reservations", content=b"{not json", headers={"content-type": "application/json"}
            ),
            client.post(
                "/reservations",
                content=b"x" * 10_000,
                headers={"content-type": "application/json"},
            ),  # 413
            client.post("/reservations", content=b"a=b"),  # 415
            client.get(f"/reservations/{uuid.uuid4()}"),  # 404
            client.get("/reservations/not-a-uuid"),  # 422
            client.get("/users/nobody"),  # 404
            client.post("/users/alice/credits", json={"amount": -1}),  # 422
            client.get("/users"),
            client.get("/readyz"),
        ]
        for response in pending:
            for attempt in _until(20):
                with attempt:
                    final = client.get(response.headers["location"])
                    assert final.status_code == 200, final.text
            answers.append(final)
    return answers


def _drop_connections(broker: infra.Broker, user: str) -> int:
    """Close the broker connections of ``user`` (only ours: a unique user in our vhost)."""
    listing = broker.rabbitmqctl("list_connections", "pid", "user", "--no-table-headers", "-q")
    pids = [line.split("\t")[0] for line in listing.splitlines() if line.endswith(f"\t{user}")]
    for pid in pids:
        broker.rabbitmqctl("close_connection", pid, "secrets test: forced reconnect")
    return len(pids)


def _failed_start(
    name: str, env: dict[str, str], log_dir: Path, within: float = 40
) -> tuple[int, str]:
    process = processes.spawn(name, [sys.executable, "-m", "workers.credit_check"], env, log_dir)
    try:
        code = process.popen.wait(within)
    except subprocess.TimeoutExpired:
        process.popen.kill()
        process.popen.wait(5)
        pytest.fail(f"{name} did not give up within {within}s:\n{process.log()[-3_000:]}")
    return code, process.log()


def test_passwords_never_leak(
    make_system: Callable[[], System],
    api_port: int,
    receiver: OtlpReceiver,
    broker: infra.Broker,
    amqp_account: AmqpAccount,
    pg_env: tuple[dict[str, str], str],
    tmp_path: Path,
) -> None:
    database, pg_password = pg_env
    system = make_system()
    # DEBUG: the libraries' own connection, frame and statement logs are searched too.
    system.base_env.update({"AMQP_URL": amqp_account.url, **database, "LOG_LEVEL": "DEBUG"})
    system.start_worker("workers.fulfilment")
    system.start_api(api_port, "api")
    impatient_port = infra.free_port()
    system.start_api(impatient_port, "api-impatient", RESERVATION_REPLY_TIMEOUT="1")
    api_url, impatient_url = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{impatient_port}"

    pending = _pending(impatient_url)  # their replies come late, and are dropped (and logged)
    system.start_worker("workers.credit_check")
    answers = pending + _exercise(api_url, pending)
    statuses = sorted({r.status_code for r in answers})
    assert {200, 201, 202, 404, 409, 413, 415, 422} <= set(statuses), statuses

    # Every service loses its broker connection and reconnects (connection errors get logged).
    dropped = _drop_connections(broker, amqp_account.user)
    assert dropped >= 4, dropped
    for attempt in _until(30):
        with attempt:
            for url in (api_url, impatient_url):
                assert httpx.get(f"{url}/readyz", timeout=5).status_code == 200
            after = httpx.post(f"{api_url}/reservations", json=GOOD, timeout=15)
            answers.append(after)
            assert after.status_code == 201, after.text

    # Workers that cannot start: wrong AMQP port, wrong AMQP password, unreachable database.
    wrong_port_pw, wrong_pw, db_pw = (f"bad-{secrets.token_hex(16)}" for _ in range(3))
    closed_port = infra.free_port()
    failing = {
        "wrong-amqp-port": (
            wrong_port_pw,
            {
                "AMQP_URL": str(
                    URL(amqp_account.url).with_port(closed_port).with_password(wrong_port_pw)
                )
            },
        ),
        "wrong-amqp-password": (
            wrong_pw,
            {"AMQP_URL": str(URL(amqp_account.url).with_password(wrong_pw))},
        ),
        "unreachable-database": (
            db_pw,
            {
                "DATABASE_URL": str(
                    URL(database["DATABASE_URL"]).with_port(closed_port).with_password(db_pw)
                )
            },
        ),
    }
    failure_logs: dict[str, str] = {}
    for name, (password, override) in failing.items():
        env = {**system.base_env, "AMQP_CONNECT_TIMEOUT": "2", **override}
        code, log = _failed_start(name, env, tmp_path)
        failure_logs[name] = log
        assert code != 0, f"{name} exited 0:\n{log}"
        assert password not in log, f"{name} leaked its password:\n{log}"
    expected = {
        "wrong-amqp-port": "RabbitMQ is unreachable at amqp://",
        "wrong-amqp-password": "refused the credentials of user",
        "unreachable-database": "could not be reached or set up",
    }
    for name, message in expected.items():
        assert message in failure_logs[name], failure_logs[name]
        assert ":***@" in failure_logs[name], failure_logs[name]

    # Stop everything: the processes flush their last spans on the way out.
    logs = {p.name: p for p in system.running}
    system.stop_all()
    process_logs = {name: p.log() for name, p in logs.items()} | failure_logs
    spans = receiver.store.all_spans()
    span_text = [json.dumps(span.to_dict(), default=str) for span in spans]
    http_text = [f"{r.status_code} {dict(r.headers)} {r.text}" for r in answers]

    passwords = {
        "amqp": amqp_account.password,
        "postgres": pg_password,
        **{f"{name} (failed start)": pw for name, (pw, _) in failing.items()},
    }
    leaks = [
        (what, where)
        for what, password in passwords.items()
        for where, texts in (
            ("logs", list(process_logs.values())),
            ("spans", span_text),
            ("http", http_text),
        )
        if any(password in t for t in texts)
    ]
    assert leaks == [], f"passwords found: {leaks}"

    # The search was over the real thing: URLs were logged (redacted) and the spans carry
    # database and broker attributes.
    assert f"{amqp_account.user}:***@" in process_logs["api"]
    assert all("Reconnecting" in process_logs[name] for name in logs), "no reconnect logged"
    assert "reply dropped" in process_logs["api-impatient"]  # the 202s' late replies
    db_spans = [s for s in spans if s.attributes.get("db.system.name") == "postgresql"]
    messaging_spans = [s for s in spans if s.attributes.get("messaging.system") == "rabbitmq"]
    assert db_spans and messaging_spans
    lines = sum(len(log.splitlines()) for log in process_logs.values())
    sys.stdout.write(
        f"\nsearched {len(passwords)} passwords in {lines} log lines of "
        f"{len(process_logs)} processes, {len(spans)} spans ({len(db_spans)} database, "
        f"{len(messaging_spans)} messaging) and {len(answers)} HTTP answers "
        f"{statuses}; broker connections dropped: {dropped}; leaks: {len(leaks)}\n"
    )
    for name, log in failure_logs.items():
        last = [line for line in log.splitlines() if line.strip()][-1:]
        sys.stdout.write(f"  {name}: {last[0][:200] if last else '(no output)'}\n")
