"""Shared test configuration."""

from collections.abc import Iterator

import pytest
import structlog


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    """A test that configures logging (to a captured stream) must not leak it to later tests."""
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
