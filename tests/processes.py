"""Real processes for end-to-end tests: the API under uvicorn and the workers as modules,
each with its own environment, tracer provider and log file (:mod:`devtools.processes`)."""

import os
from collections.abc import Mapping
from pathlib import Path

import httpx

from devtools.processes import Process, python_module

__all__ = ["Process", "base_env", "migrate", "spawn", "start_api", "start_worker"]

ROOT = Path(__file__).resolve().parents[1]


def base_env(amqp_url: str, extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "DATABASE_"))}
    env.update(
        {
            "AMQP_URL": amqp_url,
            "LOG_FORMAT": "json",
            "PYTHONUNBUFFERED": "1",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }
    )
    if "OTEL_EXPORTER_OTLP_ENDPOINT" not in extra:
        # No collector given: export nothing, rather than have each process retry the closed
        # default port until its shutdown bound (3 s) on the way out.
        env |= {f"OTEL_{signal}_EXPORTER": "none" for signal in ("TRACES", "LOGS", "METRICS")}
    env.update(extra)
    return env


def migrate(env: Mapping[str, str], log_dir: Path) -> None:
    """``python -m store.migrate`` with this environment, as every deployment runs it first."""
    step = spawn("migrate", python_module("store.migrate"), env, log_dir)
    assert step.wait_exit(within=60) == 0, step.log()


def spawn(name: str, args: list[str], env: Mapping[str, str], log_dir: Path) -> Process:
    return Process.start(name, args, env, log_path=log_dir / f"{name}.log", cwd=ROOT)


def start_api(port: int, env: Mapping[str, str], log_dir: Path, name: str = "api") -> Process:
    process = spawn(
        name, python_module("api"), {**env, "API_HOST": "127.0.0.1", "API_PORT": str(port)}, log_dir
    )

    def answers() -> None:
        assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200

    process.wait_ready(answers, within=30, retry_on=(AssertionError, httpx.HTTPError))
    return process


def start_worker(
    module: str, env: Mapping[str, str], log_dir: Path, name: str | None = None
) -> Process:
    process = spawn(name or module, python_module(module), env, log_dir)
    process.wait_for_log('"consuming"')
    return process
