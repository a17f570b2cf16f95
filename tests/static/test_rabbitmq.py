"""RabbitMQ: a dedicated user from definitions.json, no usable guest, metrics per queue."""

import base64
import hashlib
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from messaging.connection import COMPOSE_AMQP_URL
from tests.static import REPO, environment, load_json, load_yaml, mount_target, services

pytestmark = pytest.mark.static

APPS = ("api", "credit-check-worker", "fulfilment-worker")


def _conf() -> dict[str, str]:
    """rabbitmq.conf as key -> value (the sysctl-like format: key = value, # comments)."""
    settings = {}
    for line in (REPO / "rabbitmq" / "rabbitmq.conf").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, value = (part.strip() for part in line.split("=", 1))
            assert key not in settings, f"{key} is set twice"
            settings[key] = value
    return settings


def _definitions() -> dict[str, list[dict[str, Any]]]:
    definitions: dict[str, list[dict[str, Any]]] = load_json("rabbitmq/definitions.json")
    return definitions


def _password_matches(password: str, password_hash: str) -> bool:
    """RabbitMQ's rabbit_password_hashing_sha256: base64(salt + sha256(salt + password))."""
    raw = base64.b64decode(password_hash)
    salt, digest = raw[:4], raw[4:]
    return hashlib.sha256(salt + password.encode()).digest() == digest


def test_definitions_only_create_vhost_user_and_permissions() -> None:
    # Exchanges, queues and bindings are declared by the apps from messaging/topology.py.
    assert set(_definitions()) == {"vhosts", "users", "permissions"}


def test_there_is_no_guest_user_and_no_default_vhost() -> None:
    # A blank node that imports definitions creates neither guest nor "/": only these.
    definitions = _definitions()
    assert [user["name"] for user in definitions["users"]] == ["reservations"]
    assert [vhost["name"] for vhost in definitions["vhosts"]] == ["reservations"]
    assert {key for key in _conf() if "guest" in key} == {"loopback_users.guest"}


def test_the_dedicated_user_may_use_only_its_vhost() -> None:
    definitions = _definitions()
    assert definitions["permissions"] == [
        {
            "user": "reservations",
            "vhost": "reservations",
            "configure": ".*",
            "write": ".*",
            "read": ".*",
        }
    ]
    (user,) = definitions["users"]
    assert user["hashing_algorithm"] == "rabbit_password_hashing_sha256"
    # Enough for the management UI, not enough to change users or vhosts.
    assert user["tags"] == ["monitoring"]


def test_definitions_are_imported_at_boot() -> None:
    conf = _conf()
    assert conf["definitions.import_backend"] == "local_filesystem"
    assert conf["definitions.local.path"] == mount_target("rabbitmq", "rabbitmq/definitions.json")


def test_guest_stays_loopback_only_and_no_default_user_is_configured() -> None:
    conf = _conf()
    # The image's conf.d/10-defaults.conf sets this to false; ours must load after it.
    assert conf["loopback_users.guest"] == "true"
    assert "loopback_users" not in conf
    assert not {"default_user", "default_pass"} & conf.keys()
    target = mount_target("rabbitmq", "rabbitmq/rabbitmq.conf")
    assert target.startswith("/etc/rabbitmq/conf.d/")
    assert target.rsplit("/", 1)[1] > "10-defaults.conf"


def test_plugins_and_per_queue_metrics() -> None:
    plugins = (REPO / "rabbitmq" / "enabled_plugins").read_text(encoding="utf-8").strip()
    assert plugins.startswith("[") and plugins.endswith("].")
    assert {p.strip() for p in plugins[1:-2].split(",")} == {
        "rabbitmq_management",
        "rabbitmq_prometheus",
    }
    assert mount_target("rabbitmq", "rabbitmq/enabled_plugins") == "/etc/rabbitmq/enabled_plugins"
    assert _conf()["prometheus.return_per_object_metrics"] == "true"


@pytest.mark.parametrize("app", APPS)
def test_apps_connect_as_the_user_the_definitions_create(app: str) -> None:
    url = urlsplit(environment(services()[app])["AMQP_URL"])
    (user,) = _definitions()["users"]
    (permission,) = _definitions()["permissions"]
    assert url.scheme == "amqp"
    assert (url.hostname, url.port) == ("rabbitmq", 5672)
    assert url.username == user["name"] != "guest"
    assert url.password is not None
    assert _password_matches(unquote(url.password), user["password_hash"])
    assert unquote(url.path.lstrip("/")) == permission["vhost"]


def test_the_documented_url_for_the_compose_broker_logs_in_from_the_host() -> None:
    # What the README, the CLI's hint and the services' start-up error tell a user to set
    # after `docker compose up -d rabbitmq` (guest is loopback-only and does not exist there).
    url = urlsplit(COMPOSE_AMQP_URL)
    (user,) = _definitions()["users"]
    (permission,) = _definitions()["permissions"]
    assert (url.hostname, url.port) == ("127.0.0.1", 5672)
    assert "127.0.0.1:5672:5672" in " ".join(
        str(port).replace("${BIND_ADDRESS:-127.0.0.1}", "127.0.0.1")
        for port in services()["rabbitmq"]["ports"]
    )
    assert url.username == user["name"] == permission["user"]
    assert url.password is not None
    assert _password_matches(unquote(url.password), user["password_hash"])
    assert unquote(url.path.lstrip("/")) == permission["vhost"]
    assert COMPOSE_AMQP_URL in (REPO / "README.md").read_text(encoding="utf-8")


def test_password_check_follows_the_documented_algorithm() -> None:
    # The worked example in RabbitMQ's passwords guide: salt 908DC60A, password "test12".
    assert _password_matches("test12", "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR")
    assert not _password_matches("test13", "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR")


def test_prometheus_scrapes_the_rabbitmq_plugin() -> None:
    jobs = {
        job["job_name"]: job for job in load_yaml("prometheus/prometheus.yml")["scrape_configs"]
    }
    targets = [t for c in jobs["rabbitmq"]["static_configs"] for t in c["targets"]]
    assert targets == ["rabbitmq:15692"]
    assert jobs["rabbitmq"].get("metrics_path", "/metrics") == "/metrics"
