"""Bounded waits: retry an assertion until it holds or time runs out, never a bare sleep.

for attempt in eventually(within=10):
    with attempt:
        assert something()
"""

from typing import Any

from tenacity import AsyncRetrying, Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

Retried = type[BaseException] | tuple[type[BaseException], ...]


def _policy(within: float, every: float, retry_on: Retried) -> dict[str, Any]:
    return {
        "stop": stop_after_delay(within),
        "wait": wait_fixed(every),
        "retry": retry_if_exception_type(retry_on),
        "reraise": True,
    }


def eventually(within: float, every: float = 0.1, retry_on: Retried = AssertionError) -> Retrying:
    return Retrying(**_policy(within, every, retry_on))


def eventually_async(
    within: float, every: float = 0.1, retry_on: Retried = AssertionError
) -> AsyncRetrying:
    return AsyncRetrying(**_policy(within, every, retry_on))
