"""Bounded waits: a value polled until it is good enough, the last one either way."""

import itertools
import time

import pytest

from devtools.waiting import eventually, poll, poll_async


def test_poll_returns_the_first_value_that_is_good_enough() -> None:
    values = itertools.count()
    assert poll(lambda: next(values), until=lambda v: v >= 3, within=5, every=0.01) == 3


def test_poll_returns_the_last_value_when_time_runs_out() -> None:
    values = itertools.count()
    began = time.monotonic()
    last = poll(lambda: next(values), until=lambda v: v < 0, within=0.3, every=0.05)
    assert 0.3 <= time.monotonic() - began < 2
    assert last >= 3


async def test_poll_async_awaits_what_a_lambda_returns() -> None:
    async def read(v: int) -> int:
        return v

    values = itertools.count()
    got = await poll_async(lambda: read(next(values)), until=lambda v: v == 2, within=5, every=0.01)
    assert got == 2


def test_eventually_reraises_the_last_failure() -> None:
    with pytest.raises(AssertionError, match="still 1"):
        for attempt in eventually(0.2, every=0.05):
            with attempt:
                raise AssertionError("still 1")
