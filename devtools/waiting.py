"""Bounded waits on tenacity, never a bare sleep loop.

Retry an assertion until it holds or time runs out (the last failure is re-raised)::

    for attempt in eventually(within=10):
        with attempt:
            assert something()

or poll a value until it is good enough, and get the last value either way::

    depth = poll(read_depth, until=lambda d: d == 0, within=60)
"""

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    retry_if_not_result,
    stop_after_delay,
    wait_fixed,
)

T = TypeVar("T")
Retried = type[BaseException] | tuple[type[BaseException], ...]


def _retrying(within: float, every: float, retry_on: Retried) -> dict[str, Any]:
    return {
        "stop": stop_after_delay(within),
        "wait": wait_fixed(every),
        "retry": retry_if_exception_type(retry_on),
        "reraise": True,
    }


def eventually(within: float, every: float = 0.1, retry_on: Retried = AssertionError) -> Retrying:
    return Retrying(**_retrying(within, every, retry_on))


def eventually_async(
    within: float, every: float = 0.1, retry_on: Retried = AssertionError
) -> AsyncRetrying:
    return AsyncRetrying(**_retrying(within, every, retry_on))


def _polling(until: Callable[[Any], bool], within: float, every: float) -> dict[str, Any]:
    def last_value(state: RetryCallState) -> Any:
        assert state.outcome is not None
        return state.outcome.result()

    return {
        "stop": stop_after_delay(within),
        "wait": wait_fixed(every),
        "retry": retry_if_not_result(until),
        "retry_error_callback": last_value,
    }


def poll(fetch: Callable[[], T], until: Callable[[T], bool], within: float, every: float) -> T:
    """Call ``fetch`` every ``every`` seconds until ``until(value)`` or ``within`` seconds
    pass; returns the last value either way. Exceptions from ``fetch`` are not retried."""
    value: T = Retrying(**_polling(until, within, every))(fetch)
    return value


async def poll_async(
    fetch: Callable[[], Awaitable[T]], until: Callable[[T], bool], within: float, every: float
) -> T:
    """:func:`poll` for a function that returns an awaitable (a lambda will do)."""

    async def call() -> T:
        return await fetch()

    value: T = await AsyncRetrying(**_polling(until, within, every))(call)
    return value
