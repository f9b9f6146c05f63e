"""Shared test configuration."""

from collections.abc import Iterator

import pytest
import structlog
from hypothesis import Phase, settings

# Hypothesis profiles. `ci`, the default: derandomized (every run draws the same examples, so a
# CI failure replays exactly) and no example database; tests/fuzz sends 100 requests per RPC
# (~10 ms of one core each: the module ~35 s for 26 RPCs). `thorough`
# (`pytest --hypothesis-profile=thorough`): random, 2,000 per RPC (~10 minutes), failures kept in
# .hypothesis/ to be replayed first. Neither runs the "explain" phase (a line tracer on Python
# 3.11: minutes on a fuzz failure).
_PHASES = [Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink]
settings.register_profile(
    "ci",
    max_examples=100,
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    phases=_PHASES,
)
settings.register_profile(
    "thorough", max_examples=2000, deadline=None, print_blob=True, phases=_PHASES
)
settings.load_profile("ci")


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    """A test that configures logging (to a captured stream) must not leak it to later tests."""
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
