"""The API raises its soft limit on open files to the hard one: a fault campaign's 1,100 idle
connections took every descriptor of a process started with the common soft limit of 1,024.
The test lowers its own soft limit, and puts it back."""

import resource
from collections.abc import Iterator

import pytest

from service.open_files import TARGETS_WHEN_UNLIMITED, raise_open_files_limit


@pytest.fixture
def limits() -> Iterator[tuple[int, int]]:
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    yield before
    resource.setrlimit(resource.RLIMIT_NOFILE, before)


def test_a_low_soft_limit_is_raised_to_the_hard_one(limits: tuple[int, int]) -> None:
    soft, hard = limits
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.skip(f"the hard limit on open files is {hard}: nothing to raise to")
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    was, now = raise_open_files_limit()
    assert was == 256
    assert now == resource.getrlimit(resource.RLIMIT_NOFILE)[0] > 256
    if hard != resource.RLIM_INFINITY:
        assert now == hard


def test_a_limit_already_as_high_is_left_alone(limits: tuple[int, int]) -> None:
    soft, hard = limits
    top = TARGETS_WHEN_UNLIMITED[0] if hard == resource.RLIM_INFINITY else hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (top, hard))
    assert raise_open_files_limit() == (top, top)
