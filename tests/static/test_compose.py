"""compose.yaml: valid, pinned, self-consistent, and runnable without a .env file."""

import json
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest

from tests.static import (
    REPO,
    compose,
    compose_text,
    compose_variables,
    environment,
    interpolate,
    load_yaml,
    services,
)

pytestmark = pytest.mark.static

# The Compose Specification's JSON Schema, kept in the repository (tests/fixtures/README.md).
SCHEMA = REPO / "tests" / "fixtures" / "compose-spec.json"
APPS = ("api", "credit-check-worker", "fulfilment-worker")
WORKERS = ("credit-check-worker", "fulfilment-worker")

# What a healthcheck may run in each image, read from the image's own build files:
# - rabbitmq: docker-library/rabbitmq 4.2/ubuntu/Dockerfile (Ubuntu base; RabbitMQ's sbin,
#   with rabbitmq-diagnostics and rabbitmqctl, is on PATH);
# - postgres: docker-library/postgres 17/bookworm/Dockerfile (Debian; server and client
#   binaries, pg_isready among them, on PATH);
# - grafana/tempo: grafana/tempo cmd/tempo/Dockerfile at v3.0.3, distroless/static with the
#   /tempo binary only: no shell, no wget, no curl, so nothing;
# - grafana/loki: grafana/loki cmd/loki/Dockerfile at v3.7.6, FROM gcr.io/distroless/static with
#   /usr/bin/loki only, so nothing;
# - prom/prometheus: prometheus/prometheus Dockerfile at v3.13.2, FROM quay.io/prometheus/busybox;
# - grafana/grafana: Alpine-based final stage of grafana/grafana's Dockerfile (BusyBox wget and
#   sh; curl has been proposed for removal, grafana/grafana PR #122982, so it is not listed);
# - async-trace-reservations: this repository's Dockerfile, python:3.11.15-slim-bookworm.
IMAGE_TOOLS: dict[str, set[str]] = {
    "rabbitmq": {"sh", "bash", "rabbitmq-diagnostics", "rabbitmqctl", "rabbitmq-plugins"},
    "postgres": {"sh", "bash", "pg_isready", "psql"},
    "grafana/tempo": set(),
    "grafana/loki": set(),
    "prom/prometheus": {"sh", "wget", "promtool"},
    "grafana/grafana": {"sh", "bash", "wget"},
    "async-trace-reservations": {"sh", "python"},
}

# The standard OpenTelemetry SDK variables the apps may be given (no custom endpoint variable),
# plus the FastAPI instrumentation's standard URL exclusion list.
STANDARD_OTEL = {
    "OTEL_SERVICE_NAME",
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_PYTHON_FASTAPI_EXCLUDED_URLS",
    "OTEL_LOGS_EXPORTER",
    "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL",
    "OTEL_METRICS_EXPORTER",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
    "OTEL_METRIC_EXPORT_INTERVAL",
}


def _repository(image: str) -> str:
    name = image.split("@")[0]
    return name.rsplit(":", 1)[0] if ":" in name.split("/")[-1] else name


def _tag(image: str) -> str:
    name = image.split("@")[0]
    last = name.split("/")[-1]
    return last.split(":", 1)[1] if ":" in last else ""


def _healthcheck_tools(test: list[str] | str) -> tuple[str, set[str]]:
    """The healthcheck form (CMD, CMD-SHELL, NONE) and the programs it runs."""
    if isinstance(test, str):
        test = ["CMD-SHELL", test]
    form, args = test[0], test[1:]
    if form == "CMD":
        return form, {args[0]}
    if form == "CMD-SHELL":
        programs = {"sh"}
        for command in re.split(r"&&|\|\||;|\|", " ".join(args)):
            words = shlex.split(command)
            if words:
                programs.add(words[0])
        return form, programs
    return form, set()


def _published_ports(service: dict[str, Any]) -> list[int]:
    ports = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            ports.append(int(port["published"]))
        else:
            parts = str(port).split("/")[0].split(":")
            assert len(parts) >= 2, f"{port!r} publishes no fixed host port"
            ports.append(int(parts[-2]))
    return ports


def test_compose_validates_against_the_compose_specification() -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(compose()), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_the_stack_has_every_service_of_the_issue() -> None:
    assert set(services()) == {
        "rabbitmq",
        "postgres",
        "tempo",
        "loki",
        "prometheus",
        "grafana",
        "migrate",
        "api",
        "credit-check-worker",
        "fulfilment-worker",
    }


def test_every_variable_has_a_default_so_no_env_file_is_needed() -> None:
    references = compose_variables()
    assert references, "compose.yaml reads nothing from .env"
    missing = sorted(name for name, default in references.items() if default is None)
    assert not missing, f"no ${{VAR:-default}} for: {missing}"
    assert "${" not in str(compose()), "a variable form the tests cannot resolve is left"


def test_env_example_lists_each_variable_with_the_compose_default() -> None:
    example = {}
    for line in (REPO / ".env.example").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            example[key.strip()] = value.strip()
    assert example == compose_variables()


def test_every_image_is_pinned_to_an_exact_version() -> None:
    for name, service in services().items():
        image = service.get("image")
        assert image, f"{name} has no image tag"
        tag = _tag(image)
        if image == services()["migrate"]["image"]:
            continue  # built here; test_dockerfile.py checks the Dockerfile's pinned base
        assert tag and tag != "latest", f"{name}: {image} is not pinned"
        # PostgreSQL numbers releases MAJOR.MINOR (17.9); everything else MAJOR.MINOR.PATCH.
        exact = r"\d+\.\d+\b" if _repository(image) == "postgres" else r"v?\d+\.\d+\.\d+\b"
        assert re.match(exact, tag), f"{name}: {image} is not an exact version"


def test_every_referenced_file_exists() -> None:
    checked = 0
    for name, service in services().items():
        build = service.get("build")
        if build is not None:
            context = REPO / (build if isinstance(build, str) else build.get("context", "."))
            assert context.is_dir(), f"{name}: build context {context} is missing"
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile")
            assert (context / (dockerfile or "Dockerfile")).is_file()
            checked += 1
        env_files = service.get("env_file", [])
        for env_file in [env_files] if isinstance(env_files, str) else env_files:
            path = env_file if isinstance(env_file, str) else env_file["path"]
            assert (REPO / path).is_file(), f"{name}: env_file {path} is missing"
            checked += 1
        for volume in service.get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else volume.split(":")[0]
            if source.startswith("."):
                assert (REPO / source).exists(), f"{name}: bind source {source} is missing"
                checked += 1
    for config in (compose().get("configs") or {}).values():
        if "file" in config:
            assert (REPO / config["file"]).exists()
            checked += 1
    assert checked >= 10


def test_named_volumes_are_declared() -> None:
    declared = set(compose().get("volumes") or {})
    used = {
        volume.split(":")[0]
        for service in services().values()
        for volume in service.get("volumes", [])
        if isinstance(volume, str) and not volume.startswith((".", "/"))
    }
    assert used and used <= declared


def test_every_image_is_in_the_healthcheck_tool_table() -> None:
    for name, service in services().items():
        assert _repository(service["image"]) in IMAGE_TOOLS, f"{name}: add its image to IMAGE_TOOLS"


def test_healthchecks_only_run_tools_their_image_has() -> None:
    checked = []
    for name, service in services().items():
        healthcheck = service.get("healthcheck")
        if not healthcheck or healthcheck.get("disable"):
            continue
        form, programs = _healthcheck_tools(healthcheck["test"])
        assert form in {"CMD", "CMD-SHELL"}, f"{name}: healthcheck form {form}"
        available = IMAGE_TOOLS[_repository(service["image"])]
        assert programs <= available, f"{name}: {programs - available} not in {service['image']}"
        checked.append(name)
    assert set(checked) >= {"rabbitmq", "postgres", "prometheus", "grafana", "api"}


def test_tempo_has_no_healthcheck_because_its_image_has_no_tools() -> None:
    tempo = services()["tempo"]
    assert IMAGE_TOOLS[_repository(tempo["image"])] == set()
    assert "healthcheck" not in tempo


def test_service_healthy_only_waits_on_services_with_a_healthcheck() -> None:
    waits = 0
    for name, service in services().items():
        depends_on = service.get("depends_on") or {}
        if isinstance(depends_on, list):
            continue  # short form means service_started
        for target, condition in depends_on.items():
            if condition.get("condition") == "service_healthy":
                assert "healthcheck" in services()[target], f"{name} waits on {target}"
                waits += 1
    assert waits >= 7


def test_apps_start_once_broker_and_database_are_healthy() -> None:
    for name in APPS:
        depends_on = services()[name]["depends_on"]
        assert depends_on["rabbitmq"]["condition"] == "service_healthy", name
        assert depends_on["postgres"]["condition"] == "service_healthy", name


def test_nothing_waits_for_tempo_or_loki_to_be_healthy() -> None:
    for name, service in services().items():
        for backend in ("tempo", "loki"):
            condition = (service.get("depends_on") or {}).get(backend)
            if isinstance(condition, dict):
                assert condition["condition"] != "service_healthy", name


def test_loki_has_no_healthcheck_and_grafana_starts_after_it() -> None:
    assert IMAGE_TOOLS[_repository(services()["loki"]["image"])] == set()
    assert "healthcheck" not in services()["loki"]
    assert services()["grafana"]["depends_on"]["loki"]["condition"] == "service_started"


def test_apps_send_logs_to_loki_and_metrics_to_prometheus_over_otlp_http() -> None:
    loki_port = load_yaml("loki/loki.yaml")["server"]["http_listen_port"]
    for name in APPS:
        env = environment(services()[name])
        assert (env["OTEL_LOGS_EXPORTER"], env["OTEL_METRICS_EXPORTER"]) == ("otlp", "otlp")
        logs = urlsplit(env["OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"])
        assert (logs.hostname, logs.port, logs.path) == ("loki", loki_port, "/otlp/v1/logs")
        metrics = urlsplit(env["OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"])
        assert (metrics.hostname, metrics.port) == ("prometheus", 9090)
        assert metrics.path == "/api/v1/otlp/v1/metrics"
        # Loki and Prometheus accept OTLP over HTTP only; the exporters default to gRPC here.
        assert env["OTEL_EXPORTER_OTLP_LOGS_PROTOCOL"] == "http/protobuf"
        assert env["OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"] == "http/protobuf"
        assert int(env["OTEL_METRIC_EXPORT_INTERVAL"]) > 0
    assert "--web.enable-otlp-receiver" in services()["prometheus"]["command"]


def test_workers_can_scale() -> None:
    for name in WORKERS:
        worker = services()[name]
        assert "container_name" not in worker, f"{name} cannot scale with a container_name"
        assert "ports" not in worker, f"{name} cannot scale with a fixed host port"
        assert "replicas" not in (worker.get("deploy") or {}), f"{name}: scale with --scale"


def test_apps_share_one_image_and_run_their_own_module() -> None:
    commands = {name: services()[name]["command"] for name in APPS}
    assert commands == {
        "api": ["python", "-m", "api"],
        "credit-check-worker": ["python", "-m", "workers.credit_check"],
        "fulfilment-worker": ["python", "-m", "workers.fulfilment"],
    }
    assert len({services()[name]["image"] for name in APPS}) == 1
    for name in APPS:
        module = REPO / commands[name][-1].replace(".", "/")
        assert (module / "__main__.py").is_file(), f"{name}: {module} has no __main__.py"


def test_a_one_shot_migrate_step_runs_before_every_app() -> None:
    migrate = services()["migrate"]
    assert migrate["command"] == ["python", "-m", "store.migrate"]
    assert (REPO / "store" / "migrate.py").is_file()
    # Restarted after it exits 0, it would never count as completed.
    assert migrate["restart"] == "no"
    assert migrate["image"] == services()["api"]["image"]
    # Only migrate builds the image (every app waits for it): Compose's bake builds each
    # service with a build section at once, and four exporting one tag could fail with
    # 'image "...": already exists'. The apps never pull it: no registry has it.
    builders = sorted(name for name, service in services().items() if "build" in service)
    assert builders == ["migrate"], builders
    for name in APPS:
        assert services()[name]["pull_policy"] == "never", name
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert "ports" not in migrate and "healthcheck" not in migrate
    assert environment(migrate) == {"DATABASE_URL": environment(services()["api"])["DATABASE_URL"]}
    for name in APPS:
        depends_on = services()[name]["depends_on"]
        assert depends_on["migrate"] == {"condition": "service_completed_successfully"}, name


def test_apps_get_only_standard_opentelemetry_variables() -> None:
    names = {"api": "reservations-api"} | {w: w for w in WORKERS}
    for name in APPS:
        env = environment(services()[name])
        otel = {key for key in env if key.startswith("OTEL_")}
        assert otel <= STANDARD_OTEL, f"{name}: non-standard {otel - STANDARD_OTEL}"
        assert env["OTEL_SERVICE_NAME"] == names[name]
        assert env["OTEL_TRACES_EXPORTER"] == "otlp"
        assert env["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
        assert 0.0 <= float(env["OTEL_TRACES_SAMPLER_ARG"]) <= 1.0
        assert env["LOG_FORMAT"] == "json"
        assert float(env["RESERVATION_REPLY_TIMEOUT"]) > 0
        assert env["DATABASE_URL"].startswith("postgresql+asyncpg://")
        assert "@postgres:5432/" in env["DATABASE_URL"]


def test_database_url_matches_the_postgres_service() -> None:
    postgres = environment(services()["postgres"])
    expected = (
        f"postgresql+asyncpg://{postgres['POSTGRES_USER']}:{postgres['POSTGRES_PASSWORD']}"
        f"@postgres:5432/{postgres['POSTGRES_DB']}"
    )
    for name in APPS:
        assert environment(services()[name])["DATABASE_URL"] == expected, name


def test_api_listens_on_all_interfaces_on_its_published_port() -> None:
    api = services()["api"]
    env = environment(api)
    assert env["API_HOST"] == "0.0.0.0"
    assert _published_ports(api) == [int(env["API_PORT"])] == [8081]
    assert f"127.0.0.1:{env['API_PORT']}/healthz" in " ".join(api["healthcheck"]["test"])


def test_prometheus_accepts_remote_write_and_exemplars() -> None:
    command = services()["prometheus"]["command"]
    assert "--web.enable-remote-write-receiver" in command
    assert "--enable-feature=exemplar-storage" in command
    assert "--config.file=/etc/prometheus/prometheus.yml" in command


def test_published_ports_match_the_readme_port_table() -> None:
    published = {
        (port, name) for name, service in services().items() for port in _published_ports(service)
    }
    assert (8081, "api") in published
    readme = _readme_port_table(REPO / "README.md")
    assert readme == published, (
        f"only in compose.yaml: {sorted(published - readme)}; "
        f"only in README.md: {sorted(readme - published)}"
    )


def test_host_ports_bind_to_one_configurable_address() -> None:
    for port in re.findall(r'^\s+- "(.+:\d+:\d+)"', compose_text(), re.MULTILINE):
        assert port.startswith("${BIND_ADDRESS:-127.0.0.1}:"), port
    assert interpolate("${BIND_ADDRESS:-127.0.0.1}") == "127.0.0.1"


def _readme_port_table(readme: Path) -> set[tuple[int, str]]:
    """Rows of the README table whose header starts with "| Host port | Service |"."""
    rows: set[tuple[int, str]] = set()
    in_table = False
    for line in readme.read_text(encoding="utf-8").splitlines():
        cells = [cell.strip().strip("`") for cell in line.strip().strip("|").split("|")]
        if not line.lstrip().startswith("|"):
            if in_table:
                break
            continue
        if cells[:2] == ["Host port", "Service"]:
            in_table = True
        elif in_table and cells[0].isdigit():
            rows.add((int(cells[0]), cells[1]))
    assert rows, f"{readme.name} has no '| Host port | Service | ... |' table"
    return rows
