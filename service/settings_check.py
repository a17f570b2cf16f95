"""A setting the environment (or ``.env``) gives a value its settings class refuses, said in
one line by the name the user set, as every process starts: not pydantic's traceback.

``AMQP_PREFETCH=abc`` or ``LOG_LEVEL=LOUD``: ``cannot start: invalid setting AMQP_PREFETCH:
Input should be a valid integer, … (see README.md#configuration)``, exit code 1.
"""

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from pydantic import ValidationError
from pydantic_settings import BaseSettings

from service.startup import PREFIX

CONFIGURATION = "README.md#configuration"


class InvalidSettings(ValueError):
    """Settings refused, worded for the user (:func:`check`)."""


def _refused(error: ValidationError) -> list[str] | None:
    """One clause per setting a settings class (``…Settings``) refused, by the name the
    environment gives it; None for a ValidationError that is not a settings class's. No value
    is quoted: a URL's may hold a password."""
    if not error.title.endswith("Settings"):
        return None
    return [
        f"{'_'.join(str(part) for part in detail['loc']).upper()}: {detail['msg']}"
        for detail in error.errors(include_url=False, include_input=False)
    ]


def _sentence(refused: list[str]) -> str:
    return f"invalid setting{'s' if len(refused) > 1 else ''} {'; '.join(refused)}"


def invalid_settings(error: ValidationError) -> str | None:
    """What a settings class refused, as one sentence; None if ``error`` is not a settings
    class's."""
    refused = _refused(error)
    return None if refused is None else _sentence(refused)


def check(*classes: type[BaseSettings]) -> None:
    """Read every settings class a process uses, now: all the refused settings in one
    :class:`InvalidSettings`, rather than one at a time, start after start."""
    refused: list[str] = []
    for settings in classes:
        try:
            settings()
        except ValidationError as exc:
            clauses = _refused(exc)
            if clauses is None:
                raise
            refused += clauses
    if refused:
        raise InvalidSettings(_sentence(refused))


@contextmanager
def settings_checked(prefix: str = PREFIX) -> Iterator[None]:
    """A setting whose value (from the environment or ``.env``) its settings class refuses
    (``AMQP_PREFETCH=abc``, ``LOG_LEVEL=LOUD``): one line on stderr and exit code 1, not
    pydantic's traceback. Written directly: logging is not configured yet, or not by then
    (``LOG_LEVEL`` is a setting too)."""
    try:
        yield
    except InvalidSettings as exc:
        sys.stderr.write(f"{prefix}{exc} (see {CONFIGURATION})\n")
        sys.exit(1)
    except ValidationError as exc:
        if (refused := invalid_settings(exc)) is None:
            raise
        sys.stderr.write(f"{prefix}{refused} (see {CONFIGURATION})\n")
        sys.exit(1)
