"""Capturing what a module logs with structlog, for a test's assertions; logging as it was,
after a test that configured it."""

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

import pytest
import structlog

from messaging.telemetry.logs import UVICORN_LOGGERS


def capture_logs_of(
    monkeypatch: pytest.MonkeyPatch, *modules: ModuleType
) -> structlog.testing.LogCapture:
    """These modules' structlog output, captured by a logger of their own (never the shared,
    cached one: another test's ``capture_logs`` must still see it)."""
    capture = structlog.testing.LogCapture()
    logger = structlog.wrap_logger(
        structlog.ReturnLogger(), processors=[capture], wrapper_class=structlog.BoundLogger
    )
    for module in modules:
        monkeypatch.setattr(module, "log", logger)
    return capture


@contextmanager
def logging_restored() -> Iterator[None]:
    """Around a test that calls ``configure_logging``: the root logger's handlers and level, the
    uvicorn loggers' handlers and propagation, and structlog's defaults, as they were."""
    root = logging.getLogger()
    saved_root = (list(root.handlers), root.level)
    uvicorn = [logging.getLogger(name) for name in UVICORN_LOGGERS]
    saved = [(list(logger.handlers), logger.propagate) for logger in uvicorn]
    try:
        yield
    finally:
        root.handlers = saved_root[0]
        root.setLevel(saved_root[1])
        for logger, (handlers, propagate) in zip(uvicorn, saved, strict=True):
            logger.handlers = handlers
            logger.propagate = propagate
        structlog.reset_defaults()
