"""The whole system on this machine: the API and both workers as supervised children, with
traces going to an embedded collector (the default) or to an OTLP endpoint the user named."""

import os
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import httpx
from rich.console import Console

from cli.collector import OtlpReceiver, SpanStore
from cli.embedded_collector import embedded_collector
from cli.errors import CliError
from cli.migration import migrate_database
from cli.preflight import require_broker, require_free_port
from cli.settings import CliSettings
from cli.supervisor import Supervisor
from devtools.processes import CLEAN_EXIT_CODES, python_module
from devtools.waiting import eventually
from messaging.telemetry.providers import sdk_disabled
from service.notify import NOTIFY_SOCKET

# (name, module, colour, whether it says it is ready: a worker once it consumes, by systemd's
# notification protocol, service/notify.py); the API is ready on /readyz.
CHILDREN = (
    ("credit-check", "workers.credit_check", "magenta", True),
    ("fulfilment", "workers.fulfilment", "green", True),
    ("api", "api", "cyan", False),
)
READY_WITHIN = 60.0


class Interrupted(Exception):
    """Ctrl-C (or SIGTERM) arrived while starting."""


@dataclass
class LocalSystem:
    supervisor: Supervisor
    api_url: str
    otlp_endpoint: str
    receiver: OtlpReceiver | None  # None when traces go to an external endpoint

    @property
    def store(self) -> SpanStore | None:
        return self.receiver.store if self.receiver is not None else None


def children_env(settings: CliSettings, otlp_endpoint: str) -> dict[str, str]:
    # A supervisor's NOTIFY_SOCKET (systemd's, when `run` is a unit) is not the children's: the
    # workers get one of this process's own (cli.supervisor), the API none.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("OTEL_EXPORTER_OTLP") and k != NOTIFY_SOCKET
    }
    env.update(
        {
            "AMQP_URL": settings.amqp_url,
            "DATABASE_URL": settings.children_database_url(),
            "API_HOST": "127.0.0.1",
            "API_PORT": str(settings.api_port),
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_endpoint,
            # Export within 200 ms: a trace and its log lines are complete moments after a request.
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "OTEL_BLRP_SCHEDULE_DELAY": "200",
            "LOG_FORMAT": "console",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


@contextmanager
def local_system(settings: CliSettings, console: Console) -> Iterator[LocalSystem]:
    """Start everything and wait until it is ready; stop everything on the way out."""
    require_broker(settings.amqp_url)
    require_free_port(
        "127.0.0.1",
        settings.api_port,
        "the API",
        "another `reservations run` or `make run-api` may be running; or set API_URL.",
    )
    migrate_database(settings, console)
    with ExitStack() as stack:
        receiver = None
        if settings.otel_exporter_otlp_endpoint:
            endpoint = settings.otel_exporter_otlp_endpoint
            console.print(external_endpoint_line(settings), highlight=False, soft_wrap=True)
        else:
            receiver = stack.enter_context(embedded_collector(settings))
            endpoint = receiver.endpoint
            console.print(
                f"traces → embedded collector on [bold]{endpoint}[/], "
                f"kept in [bold]{settings.data_dir / 'traces.jsonl'}[/]"
            )
        if caveat := tracing_caveat(os.environ):
            console.print(f"[yellow]{caveat}[/]", highlight=False, soft_wrap=True)
        supervisor = Supervisor(console)
        supervisor.install_signal_handlers()
        system = LocalSystem(supervisor, settings.api_url, endpoint, receiver)
        try:
            env = children_env(settings, endpoint)
            for name, module, color, notifies in CHILDREN:
                supervisor.start(name, python_module(module), env, color, notifies=notifies)
            wait_ready(system)
            yield system
        finally:
            codes = supervisor.stop()
            unclean = {n: c for n, c in codes.items() if c not in CLEAN_EXIT_CODES}
            if unclean and not supervisor.stop_requested.is_set():
                codes_said = ", ".join(f"{name} {code}" for name, code in unclean.items())
                console.print(f"[yellow]exit codes:[/] {codes_said}", highlight=False)


def external_endpoint_line(settings: CliSettings) -> str:
    """One line on where traces go when they do not go to the embedded collector, and why."""
    endpoint = settings.otel_exporter_otlp_endpoint
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") == endpoint:
        return (
            f"traces → [bold]{endpoint}[/], because OTEL_EXPORTER_OTLP_ENDPOINT is set in your "
            "environment: no embedded collector starts, and traces are read back from Tempo "
            f"at {settings.tempo_url} (TEMPO_URL). `unset OTEL_EXPORTER_OTLP_ENDPOINT` to use "
            "the embedded collector."
        )
    return (
        f"traces → [bold]{endpoint}[/] (--otlp-endpoint): no embedded collector starts, and "
        f"traces are read back from Tempo at {settings.tempo_url} (TEMPO_URL)."
    )


# The SDK's samplers that drop traces by themselves (OTEL_TRACES_SAMPLER); it reads any name
# it does not know as parentbased_always_on, and a ratio it cannot read as 1.
SAMPLING_NONE = {"always_off", "parentbased_always_off"}
SAMPLING_RATIO = {"traceidratio", "parentbased_traceidratio"}


def tracing_caveat(environ: Mapping[str, str]) -> str | None:
    """Why the children, which inherit the user's environment, would export fewer traces than
    a request makes, or none: the line to say so before anything starts."""
    if sdk_disabled(environ):
        return (
            "tracing is off: OTEL_SDK_DISABLED=true is set in your environment, so the "
            "services export no traces, log records or metrics. `unset OTEL_SDK_DISABLED` to "
            "see them."
        )
    sampler = environ.get("OTEL_TRACES_SAMPLER", "").strip().lower()
    ratio = _ratio(environ) if sampler in SAMPLING_RATIO else 1.0
    if sampler in SAMPLING_NONE or ratio == 0:
        exported = "no trace is exported"
    elif ratio < 1:
        exported = f"about {ratio * 100:g} % of the traces are exported"
    else:
        return None
    named = f"OTEL_TRACES_SAMPLER={sampler}"
    if argument := environ.get("OTEL_TRACES_SAMPLER_ARG", "").strip():
        named += f" (OTEL_TRACES_SAMPLER_ARG={argument})"
    return (
        f"{named} is set in your environment: {exported}. `unset OTEL_TRACES_SAMPLER` to see "
        "every one."
    )


def _ratio(environ: Mapping[str, str]) -> float:
    """The sampling ratio as the SDK takes it: one it cannot read, or outside 0..1, is 1."""
    try:
        ratio = float(environ.get("OTEL_TRACES_SAMPLER_ARG", "1"))
    except ValueError:
        return 1.0
    return ratio if 0 <= ratio <= 1 else 1.0


def wait_ready(system: LocalSystem) -> None:
    """Until the workers consume and the API answers /readyz; a dead child or Ctrl-C ends it."""
    try:
        for attempt in eventually(
            READY_WITHIN, every=0.2, retry_on=(AssertionError, httpx.HTTPError)
        ):
            with attempt:
                _check_ready(system)
    except (AssertionError, httpx.HTTPError) as error:
        raise CliError(f"not ready within {READY_WITHIN:.0f} s: {error}") from None


def _check_ready(system: LocalSystem) -> None:
    supervisor = system.supervisor
    if supervisor.stop_requested.is_set():
        raise Interrupted
    if (dead := supervisor.died()) is not None:
        raise CliError(
            dead.why_it_died(),
            hint="README.md, Troubleshooting" if dead.failure else "its last log lines are above.",
        )
    waiting = [c.name for c in supervisor.children if c.notifies and not c.ready.is_set()]
    assert not waiting, f"waiting for {waiting} to say they consume (READY=1 on NOTIFY_SOCKET)"
    response = httpx.get(f"{system.api_url}/readyz", timeout=1)
    assert response.status_code == 200, "API not ready"
