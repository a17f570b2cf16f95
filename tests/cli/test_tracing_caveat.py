"""`reservations run` and `demo` say so before anything starts when the user's environment,
which the services inherit, turns their tracing off or samples it: else the demo would wait
for a trace that never comes."""

import pytest

from cli.system import tracing_caveat


def test_the_sdk_turned_off_is_named_with_how_to_undo_it() -> None:
    caveat = tracing_caveat({"OTEL_SDK_DISABLED": "True"})
    assert caveat is not None and caveat.startswith("tracing is off: OTEL_SDK_DISABLED=true")
    assert "`unset OTEL_SDK_DISABLED`" in caveat


def test_a_sampler_that_drops_traces_is_named_with_its_argument() -> None:
    caveat = tracing_caveat(
        {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}
    )
    assert caveat == (
        "OTEL_TRACES_SAMPLER=parentbased_traceidratio (OTEL_TRACES_SAMPLER_ARG=0.1) is set in "
        "your environment: about 10 % of the traces are exported. `unset OTEL_TRACES_SAMPLER` "
        "to see every one."
    )


def test_a_small_ratio_is_not_rounded_to_nothing() -> None:
    caveat = tracing_caveat(
        {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.001"}
    )
    assert caveat is not None and "about 0.1 % of the traces" in caveat


@pytest.mark.parametrize(
    "environ",
    [
        {"OTEL_TRACES_SAMPLER": "always_off"},
        # It said "about 0 % of the traces are exported" (a new user's).
        {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0"},
    ],
)
def test_a_sampler_that_drops_every_trace_says_none(environ: dict[str, str]) -> None:
    caveat = tracing_caveat(environ)
    assert caveat is not None and "no trace is exported" in caveat, caveat


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"OTEL_SDK_DISABLED": "false"},
        {"OTEL_TRACES_SAMPLER": "parentbased_always_on"},
        {"OTEL_TRACES_SAMPLER": "always_on"},
        {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "1.0"},
        {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "half"},  # SDK: 1
        {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "-0.5"},  # SDK: 1
        {"OTEL_TRACES_SAMPLER": "no_such_sampler"},  # the SDK: parentbased_always_on
    ],
)
def test_nothing_is_said_when_every_trace_is_exported(environ: dict[str, str]) -> None:
    assert tracing_caveat(environ) is None
