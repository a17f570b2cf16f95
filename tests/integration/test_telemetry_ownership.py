"""The API's telemetry belongs to its composition root, whatever FastAPI is told.

FastAPI has OpenTelemetry support of its own. With ``FASTAPI_OTEL_AUTO_CONFIGURE=true`` (its
switch for exporting to the endpoint the environment names) it would install global providers
with OTLP/HTTP exporters when the app starts, before our lifespan, and the process would run
two export pipelines, ours unable to become the global one. The app turns that support off;
this checks it in a fresh process, as uvicorn starts the app (the ASGI lifespan protocol)."""

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pydantic import SecretStr

from devtools.addresses import free_port
from store.migrate import migrate
from store.settings import StoreSettings
from tests.processes import ROOT

pytestmark = pytest.mark.integration

# Starts the app through its ASGI lifespan, then reports the process's global tracer provider.
_START_AND_REPORT = textwrap.dedent(
    """
    import asyncio, json, sys
    MARKER = sys.argv[1]
    from opentelemetry import trace
    from api.app import create_app

    async def main():
        app = create_app()
        inbox, outbox = asyncio.Queue(), asyncio.Queue()
        await inbox.put({"type": "lifespan.startup"})
        task = asyncio.create_task(
            app({"type": "lifespan", "asgi": {"version": "3.0"}}, inbox.get, outbox.put)
        )
        started = await asyncio.wait_for(outbox.get(), 60)
        provider = trace.get_tracer_provider()
        resource = getattr(provider, "resource", None)
        report = {
            "started": started["type"],
            "service": resource.attributes.get("service.name") if resource else None,
        }
        await inbox.put({"type": "lifespan.shutdown"})
        await asyncio.wait_for(task, 30)
        print(MARKER + json.dumps(report), flush=True)

    asyncio.run(main())
    """
)
_MARKER = "lifespan report: "


def test_fastapi_auto_configuration_adds_no_second_pipeline(amqp_url: str, tmp_path: Path) -> None:
    store_settings = StoreSettings(database_url=SecretStr(f"sqlite+aiosqlite:///{tmp_path}/db"))
    asyncio.run(migrate(store_settings))
    closed = f"http://127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "DATABASE_"))}
    env |= {
        "AMQP_URL": amqp_url,
        "DATABASE_URL": store_settings.database_url.get_secret_value(),
        "FASTAPI_OTEL_AUTO_CONFIGURE": "true",
        # What FastAPI's auto-configuration exports with; our exporters read it too.
        "OTEL_EXPORTER_OTLP_ENDPOINT": closed,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "1",
    }
    done = subprocess.run(
        [sys.executable, "-c", _START_AND_REPORT, _MARKER],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = (done.stdout + done.stderr).splitlines()
    report = json.loads(next(line for line in lines if line.startswith(_MARKER))[len(_MARKER) :])
    assert report["started"] == "lifespan.startup.complete", done.stderr
    # The global provider is the one the lifespan built (with the API's resource), not one
    # FastAPI made first with a default resource.
    assert report["service"] == "reservations-api", done.stderr
