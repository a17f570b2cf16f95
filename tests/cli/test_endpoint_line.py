"""An OTLP endpoint that replaces the embedded collector is named in one line, with its cause."""

import signal

import pytest

from cli.embedded_collector import by_default
from cli.run import why_killed
from cli.settings import CliSettings
from cli.system import external_endpoint_line


def test_an_exported_endpoint_is_named_with_how_to_undo_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4319")
    line = external_endpoint_line(CliSettings())
    assert "\n" not in line
    assert line.startswith("traces → [bold]http://localhost:4319[/], because ")
    assert "OTEL_EXPORTER_OTLP_ENDPOINT is set in your environment" in line
    assert "no embedded collector starts" in line
    assert "`unset OTEL_EXPORTER_OTLP_ENDPOINT`" in line
    assert "--source" not in line  # `run` and `demo` have no such option


def test_the_option_is_named_as_the_option(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    settings = CliSettings(otel_exporter_otlp_endpoint="http://127.0.0.1:4317")
    line = external_endpoint_line(settings)
    assert line.startswith("traces → [bold]http://127.0.0.1:4317[/] (--otlp-endpoint)")
    assert "unset" not in line


def test_the_collector_says_how_services_run_by_hand_reach_it() -> None:
    """On another port than OTLP's, "export here by default" was untrue (a new user's)."""
    assert by_default("http://127.0.0.1:4317") == "by default"
    assert by_default("http://127.0.0.1:4319") == (
        "with OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4319"
    )


def test_a_child_ended_by_a_signal_is_said_by_that_signal() -> None:
    """ "Its last log lines say why" was untrue for a child another process stopped (its log
    shows a normal shutdown), and a real-time signal had no name to print."""
    assert why_killed(1) is None and why_killed(None) is None
    assert "stopped by SIGTERM, sent by another process" in str(why_killed(-signal.SIGTERM))
    assert "out-of-memory killer" in str(why_killed(-signal.SIGKILL))
    assert "ended on SIGSEGV: a crash" in str(why_killed(-signal.SIGSEGV))
    assert "signal" in str(why_killed(-(signal.SIGRTMIN + 3)))
