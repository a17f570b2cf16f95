"""Bounded waits: retry an assertion until it holds or time runs out, never a bare sleep.

for attempt in eventually(within=10):
    with attempt:
        assert something()
"""

from tenacity import AsyncRetrying, Retrying, retry_if_exception_type, stop_after_delay, wait_fixed


def eventually(within: float, every: float = 0.1) -> Retrying:
    return Retrying(
        stop=stop_after_delay(within),
        wait=wait_fixed(every),
        retry=retry_if_exception_type(AssertionError),
        reraise=True,
    )


def eventually_async(within: float, every: float = 0.1) -> AsyncRetrying:
    return AsyncRetrying(
        stop=stop_after_delay(within),
        wait=wait_fixed(every),
        retry=retry_if_exception_type(AssertionError),
        reraise=True,
    )
