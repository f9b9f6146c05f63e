"""Shared test configuration."""

from collections.abc import Iterator

import pytest
import structlog
from hypothesis import settings

# Hypothesis profiles. `ci`, the default: derandomized (every run draws the same examples, so a
# CI failure replays exactly) and no example database; tests/fuzz sends a few hundred requests
# per RPC. `thorough` (`pytest --hypothesis-profile=thorough`): random, ten times as many.
settings.register_profile(
    "ci", max_examples=200, derandomize=True, database=None, deadline=None, print_blob=True
)
settings.register_profile("thorough", max_examples=2000, deadline=None, print_blob=True)
settings.load_profile("ci")


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    """A test that configures logging (to a captured stream) must not leak it to later tests."""
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
