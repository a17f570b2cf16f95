"""`reservations migrate` as a real process: the database `run` uses, migrated and seeded once,
and a database it cannot reach reported in one line."""

import sqlite3
import subprocess
from pathlib import Path

import pytest

from store.revisions import head_revision
from tests import infra
from tests.cli.conftest import RESERVATIONS, cli_env

pytestmark = pytest.mark.e2e


def _migrate(env: dict[str, str], cwd: Path) -> "subprocess.CompletedProcess[str]":
    return subprocess.run(
        [str(RESERVATIONS), "migrate"], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def test_migrate_creates_and_seeds_the_database_run_uses_and_can_run_again(
    amqp_url: str, tmp_path: Path
) -> None:
    env = cli_env(amqp_url, tmp_path / ".data")  # no DATABASE_URL: the data dir's SQLite file
    for _ in range(2):
        done = _migrate(env, tmp_path)
        assert done.returncode == 0, done.stderr
        assert f"is at revision {head_revision()}" in done.stdout, done.stdout
    database = tmp_path / ".data" / "reservations.db"
    with sqlite3.connect(database) as conn:
        users = dict(conn.execute("SELECT username, credits FROM users"))
        (version,) = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    assert users == {"alice": 100, "bob": 5, "carol": 40}
    assert version == head_revision()


def test_an_unreachable_database_is_one_line_without_a_traceback(
    amqp_url: str, tmp_path: Path
) -> None:
    closed = infra.free_port()
    url = f"postgresql+asyncpg://someone:s3cret-pw@127.0.0.1:{closed}/nowhere"
    done = _migrate(cli_env(amqp_url, tmp_path / ".data", DATABASE_URL=url), tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "could not migrate the database at postgresql+asyncpg://someone:***@" in done.stderr
    assert "s3cret-pw" not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({"DATABASE_URL": "postgresql://someone:s3cret-pw@127.0.0.1/test"}, "DATABASE_URL: use"),
        ({"AMQP_URL": "amqp://someone:s3cret-pw@:5672/"}, "AMQP_URL: not an AMQP URL"),
        ({"SEED_FILE": "/nonexistent/seed.json"}, "could not read the seed file"),
    ],
    ids=["sync-driver", "no-broker-host", "no-seed-file"],
)
def test_a_setting_nothing_can_use_is_one_line_naming_it(
    amqp_url: str, tmp_path: Path, env: dict[str, str], said: str
) -> None:
    """A 90-line traceback each (a new user's `DATABASE_URL` without `+asyncpg`), and a seed
    file that is not there was blamed on the database."""
    done = _migrate(cli_env(amqp_url, tmp_path / ".data", **env), tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.startswith("error: ") and said in done.stderr, done.stderr
    assert "Check DATABASE_URL" not in done.stderr, done.stderr
    assert "s3cret-pw" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / ".data" / "reservations.db").exists()
