"""Shared test configuration: logging reset, and the storage engines a store test runs on.

A test (or fixture) that asks for `engine` runs once per engine, "sqlite" and "postgresql"
(one contract, two engines); `@pytest.mark.sqlite_only` keeps a test that looks inside the
SQLite file to SQLite. `store_env` is the environment (IDMESH_ names without the prefix) that
selects the engine: nothing for SQLite, IDMESH_DATABASE_URL of a fresh store for PostgreSQL.
"""

from collections.abc import AsyncIterator, Iterator

import pytest
import structlog
from hypothesis import Phase, settings

from tests.postgres import create_store, drop_store, postgres_server

# Hypothesis profiles. `ci`, the default: derandomized (every run draws the same examples, so a
# CI failure replays exactly) and no example database; tests/fuzz sends 100 requests per RPC
# (~10 ms of one core each: ~40 s for the 38 RPCs). `thorough`
# (`pytest --hypothesis-profile=thorough`): random, 2,000 per RPC (~15 minutes), failures kept in
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


ENGINES = ("sqlite", "postgresql")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "engine" in metafunc.fixturenames:
        only_sqlite = metafunc.definition.get_closest_marker("sqlite_only") is not None
        metafunc.parametrize("engine", ["sqlite"] if only_sqlite else ENGINES, indirect=True)


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    """A test that configures logging (to a captured stream) must not leak it to later tests."""
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    """One PostgreSQL server per test session (started on first use; see tests/postgres.py)."""
    with postgres_server() as url:
        yield url


@pytest.fixture
def engine(request: pytest.FixtureRequest) -> str:
    result: str = request.param
    return result


@pytest.fixture
async def postgres_url(postgres_admin_url: str) -> AsyncIterator[str]:
    """The URL of a fresh store (a schema of its own), dropped after the test."""
    url = await create_store(postgres_admin_url)
    try:
        yield url
    finally:
        await drop_store(postgres_admin_url, url)


@pytest.fixture
async def store_env(engine: str, request: pytest.FixtureRequest) -> AsyncIterator[dict[str, str]]:
    """The variables that put a service's store on `engine` (a fresh store each test)."""
    if engine == "sqlite":
        yield {}
        return
    admin_url: str = request.getfixturevalue("postgres_admin_url")  # started on first use
    url = await create_store(admin_url)
    try:
        yield {"DATABASE_URL": url}
    finally:
        await drop_store(admin_url, url)
