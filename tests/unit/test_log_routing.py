"""uvicorn's lines go through the services' one formatter, unless uvicorn was told to keep its
access log quiet (`uvicorn api.app:create_app --factory --no-access-log`)."""

import json
import logging
from collections.abc import Iterator

import pytest
import uvicorn
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.trace.span import TraceState
from uvicorn.config import LOGGING_CONFIG

from messaging.telemetry.logs import LogSettings, configure_logging
from tests.logs import logging_restored


@pytest.fixture(autouse=True)
def restored_logging() -> Iterator[None]:
    with logging_restored():
        yield


def _access_line() -> None:
    logging.getLogger("uvicorn.access").info(
        '%s - "%s %s HTTP/%s" %d', "127.0.0.1:1", "POST", "/reservations", "1.1", 201
    )


def test_uvicorns_access_log_goes_through_the_services_formatter(
    capsys: pytest.CaptureFixture[str],
) -> None:
    uvicorn.Config("api.app:create_app", log_config=LOGGING_CONFIG)  # installs uvicorn's own
    configure_logging("unit-test", LogSettings(log_format="json"))
    _access_line()
    [line] = capsys.readouterr().out.splitlines()
    record = json.loads(line)
    assert record["event"] == '127.0.0.1:1 - "POST /reservations HTTP/1.1" 201'
    assert (record["logger"], record["service.name"]) == ("uvicorn.access", "unit-test")


def test_an_access_log_turned_off_in_uvicorn_stays_off(
    capsys: pytest.CaptureFixture[str],
) -> None:
    uvicorn.Config("api.app:create_app", log_config=LOGGING_CONFIG, access_log=False)
    configure_logging("unit-test", LogSettings(log_format="json"))
    _access_line()
    logging.getLogger("uvicorn.error").info("Application startup complete.")
    [line] = capsys.readouterr().out.splitlines()
    assert json.loads(line)["event"] == "Application startup complete."


def _client_noise() -> None:
    """What a request's headers and URL make the pinned OpenTelemetry API log."""
    TraceState.from_header(["garbage", "k=v,==,k=v"])
    TraceState.from_header([",".join(f"k{i}=v" for i in range(40))])
    BoundedAttributes(max_value_len=10, attributes={"url.path": "/" + "a" * 20})


def test_what_a_client_can_make_the_sdk_warn_about_is_debug_not_warning(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("unit-test", LogSettings(log_format="json"))
    _client_noise()
    BoundedAttributes(attributes={"ok": object()})  # type: ignore[dict-item]  # our bug: stays
    [line] = capsys.readouterr().out.splitlines()
    assert json.loads(line)["level"] == "warning"
    assert "Invalid type" in json.loads(line)["event"]

    configure_logging("unit-test", LogSettings(log_format="json", log_level="DEBUG"))
    _client_noise()
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {r["level"] for r in records} == {"debug"}
    assert {r["logger"] for r in records} == {
        "opentelemetry.trace.span",
        "opentelemetry.attributes",
    }
    assert any("w3c identifiers" in r["event"] for r in records)
    assert any("max length of 10" in r["event"] for r in records)
