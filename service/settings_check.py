"""A setting the environment (or ``.env``) gives a value its settings class refuses, said in
one line by the name the user set, as every process starts: not pydantic's traceback.

``AMQP_PREFETCH=abc`` or ``LOG_LEVEL=LOUD``: ``cannot start: invalid setting AMQP_PREFETCH:
Input should be a valid integer, … (see README.md#configuration)``, exit code 1.
"""

import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from pydantic import ValidationError
from pydantic_settings import BaseSettings

from service.startup import PREFIX

CONFIGURATION = "README.md#configuration"


class InvalidSettings(ValueError):
    """Settings refused, worded for the user (:func:`check`)."""


def describe(*errors: ValidationError, also: Sequence[str] = ()) -> str:
    """What settings classes refused (and ``also``, refusals worded elsewhere), in one
    sentence: each setting by the name the environment gives it, and why. No value is quoted:
    a URL's may hold a password."""
    refused = [
        f"{'_'.join(str(part) for part in detail['loc']).upper()}: "
        f"{detail['msg'].removeprefix('Value error, ')}"
        for error in errors
        for detail in error.errors(include_url=False, include_input=False)
    ]
    refused += also
    return f"invalid setting{'s' if len(refused) > 1 else ''} {'; '.join(refused)}"


def check(
    *classes: type[BaseSettings] | Callable[[], BaseSettings],
    also: Callable[[], list[str]] | None = None,
) -> None:
    """Read every settings class a process uses, now (or build it as given: some values from
    the caller, the rest from the environment), and ``also`` (what it reads otherwise: the
    OpenTelemetry variables): all the refused settings in one :class:`InvalidSettings`, rather
    than one at a time, start after start."""
    errors: list[ValidationError] = []
    for settings in classes:
        try:
            settings()
        except ValidationError as exc:
            errors.append(exc)
    refused = also() if also is not None else []
    if errors or refused:
        raise InvalidSettings(describe(*errors, also=refused))


@contextmanager
def settings_checked(prefix: str = PREFIX) -> Iterator[None]:
    """The settings :func:`check` refused (``AMQP_PREFETCH=abc``, ``LOG_LEVEL=LOUD``): one line
    on stderr and exit code 1, not pydantic's traceback. Written directly: logging is not
    configured yet (``LOG_LEVEL`` is a setting too)."""
    try:
        yield
    except InvalidSettings as exc:
        sys.stderr.write(f"{prefix}{exc} (see {CONFIGURATION})\n")
        sys.exit(1)
