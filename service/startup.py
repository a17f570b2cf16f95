"""A service that cannot start says so in one line: what failed, where, and the fix, with a
pointer to the README's Troubleshooting. The traceback only with ``LOG_LEVEL=DEBUG``.

Each known start-up failure (:data:`STARTUP_FAILURES`) is raised once, already worded for the
user; the composition roots (a worker's :func:`workers.runtime.serve`, the API's lifespan)
report it with :func:`report_startup_failure`. uvicorn would then log the lifespan's traceback
as well, and "Application startup failed. Exiting.": :func:`quiet_lifespan_traceback` keeps
both out, below DEBUG.
"""

import logging

import structlog

from messaging.connection import BrokerUnreachable, TopologyConflict
from store.engine import DatabaseUnreachable, SchemaNotReady

# Raised once, already worded for the user: reported in one line, not as a traceback.
STARTUP_FAILURES = (BrokerUnreachable, TopologyConflict, DatabaseUnreachable, SchemaNotReady)
TROUBLESHOOTING = "README.md#troubleshooting"
PREFIX = "cannot start: "

log = structlog.get_logger(__name__)


def _debugging() -> bool:
    return logging.getLogger().isEnabledFor(logging.DEBUG)


def report_startup_failure(exc: BaseException) -> None:
    """One error line; with ``LOG_LEVEL=DEBUG`` the traceback too."""
    log.error(f"{PREFIX}{exc} (see {TROUBLESHOOTING})", exc_info=exc if _debugging() else None)


UVICORN_STARTUP_FAILED = "Application startup failed. Exiting."


class _LifespanTraceback(logging.Filter):
    """Drops uvicorn's copy of a start-up traceback that was already reported in one line, and
    its "Application startup failed" line after a report."""

    def __init__(self, reported: tuple[type[BaseException], ...]) -> None:
        super().__init__()
        self._names = tuple(f"{cls.__name__}: " for cls in reported)
        self._dropped = False  # a reported failure's traceback: the start-up failed

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if _debugging():
            return True
        if message == UVICORN_STARTUP_FAILED:  # uvicorn's line after the traceback
            return not self._dropped
        if message.startswith("Traceback") and any(name in message for name in self._names):
            self._dropped = True
            return False
        return True


def quiet_lifespan_traceback(reported: tuple[type[BaseException], ...]) -> None:
    """Keep uvicorn from logging the traceback of a ``reported`` start-up failure."""
    logger = logging.getLogger("uvicorn.error")
    logger.filters = [f for f in logger.filters if not isinstance(f, _LifespanTraceback)]
    logger.addFilter(_LifespanTraceback(reported))
