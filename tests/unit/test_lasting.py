"""The watchdogs' wait: wrong at every check for a while, not now and then."""

import asyncio

from messaging.lasting import until_lasting


async def test_returns_once_wrong_at_every_check_for_the_time_given() -> None:
    checks: list[bool] = []

    async def wrong() -> bool:
        checks.append(True)
        return True

    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(until_lasting(wrong, 0.05, 0.01), 5)
    assert loop.time() - started >= 0.05
    assert len(checks) >= 3  # the first wrong one, then checks until it has lasted


async def test_a_check_that_finds_it_right_starts_afresh() -> None:
    answers = iter([True, True, True, False] * 50)

    async def wrong() -> bool:
        return next(answers)

    waiting = asyncio.ensure_future(until_lasting(wrong, 1.0, 0.01))
    await asyncio.sleep(1.5)
    assert not waiting.done(), "three wrong checks in a row, 10 ms apart, never last 1 s"
    waiting.cancel()
