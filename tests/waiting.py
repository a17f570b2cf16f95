"""Bounded waits for the tests: the dev tools' own (:mod:`devtools.waiting`), never a bare sleep.

for attempt in eventually(within=10):
    with attempt:
        assert something()
"""

from devtools.waiting import eventually, eventually_async

__all__ = ["eventually", "eventually_async"]
