"""Capturing what a module logs with structlog, for a test's assertions."""

from types import ModuleType

import pytest
import structlog


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
