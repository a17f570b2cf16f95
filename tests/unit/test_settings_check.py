"""Settings refused as a process starts: one line naming each setting as the user set it, no
value quoted; any other validation error is left alone (a bug, not a setting)."""

import pytest
from pydantic import BaseModel, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings

from api.settings import ApiSettings
from messaging.settings import BrokerSettings
from service.settings_check import InvalidSettings, check, settings_checked
from store.settings import StoreSettings


class DemoSettings(BaseSettings):
    demo_prefetch: int = 1
    demo_url: SecretStr = SecretStr("amqp://u:p@h/")
    demo_hold: float = Field(default=1.0, ge=1)


class Payload(BaseModel):
    count: int


def test_every_refused_setting_is_named_and_no_value_is_quoted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DEMO_PREFETCH", "many")
    monkeypatch.setenv("DEMO_HOLD", "0.5")
    with pytest.raises(InvalidSettings) as refused:
        check(DemoSettings)
    assert str(refused.value) == (
        "invalid settings DEMO_PREFETCH: Input should be a valid integer, unable to parse "
        "string as an integer; DEMO_HOLD: Input should be greater than or equal to 1"
    )
    assert "many" not in str(refused.value)


def test_a_refused_setting_exits_1_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DEMO_PREFETCH", "many")
    with pytest.raises(SystemExit) as stopped, settings_checked():
        check(DemoSettings)
    assert stopped.value.code == 1
    assert capsys.readouterr().err == (
        "cannot start: invalid setting DEMO_PREFETCH: Input should be a valid integer, unable "
        "to parse string as an integer (see README.md#configuration)\n"
    )


def test_a_validation_error_that_is_no_setting_s_is_raised_as_it_is() -> None:
    with pytest.raises(ValidationError), settings_checked():
        Payload.model_validate({"count": "many"})


@pytest.mark.parametrize(
    "url",
    [
        "amqp://rabbitmq/",
        "amqp://guest:guest@127.0.0.1:5672/",
        "amqps://u:p@h:5671/vhost",
        "amqp://h/?heartbeat=0&timeout=30",
    ],
)
def test_an_amqp_url_with_a_host_is_taken(url: str) -> None:
    assert BrokerSettings(amqp_url=SecretStr(url)).amqp_url.get_secret_value() == url


@pytest.mark.parametrize(
    "url", ["notaurl", "amqp:///", "amqp://u:p@h:notaport/", "http://h/", "amqp://u:s3cret@:1/"]
)
def test_an_amqp_url_without_a_host_is_refused_naming_no_part_of_it(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AMQP_URL", url)
    with pytest.raises(InvalidSettings) as refused:
        check(BrokerSettings)
    assert str(refused.value).startswith("invalid setting AMQP_URL: not an AMQP URL with a host")
    assert "s3cret" not in str(refused.value) and "notaport" not in str(refused.value)


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("bogus", ""),
        ("postgresql://postgres@127.0.0.1/test", ", not postgresql://"),
        ("sqlite:///.data/x.db", ", not sqlite://"),
        ("postgresql+psycopg2://u:s3cret@h/db", ", not postgresql+psycopg2://"),
        # An @ left unencoded in the password: the "port" is the rest of it, never quoted.
        ("postgresql+asyncpg://app:p@ss:s3cret@db/db", ""),
    ],
)
def test_a_database_url_without_an_installed_async_driver_is_refused(
    url: str, named: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", url)
    with pytest.raises(InvalidSettings) as refused:
        check(StoreSettings)
    assert str(refused.value) == (
        "invalid setting DATABASE_URL: use sqlite+aiosqlite:///PATH or "
        f"postgresql+asyncpg://USER:PASSWORD@HOST:PORT/DB (the async drivers installed){named}"
    )
    assert "s3cret" not in str(refused.value)


def test_an_idempotency_key_ttl_past_a_year_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """An expiry past the database's integers started normally, then every keyed POST failed
    with a 500 (a review's `IDEMPOTENCY_KEY_TTL=99999999999999999999`)."""
    monkeypatch.setenv("IDEMPOTENCY_KEY_TTL", "99999999999999999999")
    with pytest.raises(InvalidSettings, match="IDEMPOTENCY_KEY_TTL: Input should be less than"):
        check(ApiSettings)
    monkeypatch.setenv("IDEMPOTENCY_KEY_TTL", str(365 * 24 * 3600))
    check(ApiSettings)


@pytest.mark.parametrize(
    ("query", "name"),
    [("heartbeat=abc", "heartbeat"), ("heartbeat=70000", "heartbeat"), ("timeout=-1", "timeout")],
)
def test_an_amqp_url_parameter_aiormq_would_read_as_zero_is_refused(
    query: str, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aiormq reads a heartbeat it cannot parse as 0, which turns heartbeats off, silently."""
    monkeypatch.setenv("AMQP_URL", f"amqp://u:s3cret@h/?{query}")
    with pytest.raises(InvalidSettings) as refused:
        check(BrokerSettings)
    assert str(refused.value).startswith(
        f"invalid setting AMQP_URL: its {name} parameter must be a whole number of seconds"
    )
    assert "s3cret" not in str(refused.value)
