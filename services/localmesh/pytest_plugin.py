"""The pytest plugin of idmesh's local mesh: `pip install idmesh[testing]` and a project's tests
get a running mesh, real processes on free ports, and typed clients for it.

Fixtures:
- `idmesh_spec`: the MeshSpec to run (session scope). By default the demo topology (operators
  beeline and megafon, messengers alpha and beta) on free ports, on the engine and with the
  replicas and verification window of the options below; override the fixture in a conftest.py
  for another topology.
- `idmesh_mesh`: the mesh of idmesh_spec, started once per test session and stopped at its end.
- `idmesh_fresh_mesh`: a mesh of idmesh_spec of the test's own (function scope: slower, for
  tests that kill or restart processes).
- `idmesh_client`: a MeshClient of idmesh_mesh (an async fixture: needs pytest-asyncio, which
  the `testing` extra installs), with stubs per caller and role (`gateway("alpha")`,
  `registry_admin("beeline")`, `notifier_as("alpha")`, ...) and the steps a test needs:
  `create_subscriber`, `identify`, `sms_code` (the code a user was sent), `terminate_contract`,
  `wait_revoked` (until the notice has been applied).

Options (command line, or the same names in the ini file without the dashes):
`--idmesh-engine sqlite|postgresql` (postgresql: an embedded server, nothing to install),
`--idmesh-replicas N` (PostgreSQL only), `--idmesh-window SECONDS` (the verification window).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from services.localmesh.client import MeshClient
from services.localmesh.mesh import Mesh
from services.localmesh.spec import MeshSpec, MessengerSpec, PostgresSpec, demo_spec

ENGINES = ("sqlite", "postgresql")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("idmesh", "idmesh's local mesh")
    for name, help_text, default in (
        ("idmesh-engine", "the mesh's store: sqlite or postgresql", "sqlite"),
        ("idmesh-replicas", "replicas of every service (postgresql only)", "1"),
        ("idmesh-window", "the verification window in seconds", "30"),
    ):
        group.addoption(f"--{name}", dest=name.replace("-", "_"), default=None, help=help_text)
        parser.addini(name.replace("-", "_"), help_text, default=default)


def _option(config: pytest.Config, name: str) -> str:
    value = config.getoption(name)
    return str(value if value is not None else config.getini(name))


@pytest.fixture(scope="session")
def idmesh_spec(pytestconfig: pytest.Config) -> MeshSpec:
    engine = _option(pytestconfig, "idmesh_engine")
    if engine not in ENGINES:
        raise pytest.UsageError(f"--idmesh-engine: one of {', '.join(ENGINES)}, got {engine!r}")
    replicas = int(_option(pytestconfig, "idmesh_replicas"))
    window = float(_option(pytestconfig, "idmesh_window"))
    demo = demo_spec(
        free_ports=True,
        postgres=PostgresSpec() if engine == "postgresql" else None,
        replicas=replicas,
    )
    messengers = tuple(
        MessengerSpec(m.messenger_id, verification_window_seconds=window) for m in demo.messengers
    )
    return MeshSpec(
        operators=demo.operators,
        messengers=messengers,
        postgres=demo.postgres,
        replicas=demo.replicas,
    )


def _run(spec: MeshSpec, folder: Path) -> Iterator[Mesh]:
    mesh = Mesh(spec, folder)
    mesh.start(timeout=60)
    try:
        yield mesh
    finally:
        mesh.stop()


@pytest.fixture(scope="session")
def idmesh_mesh(idmesh_spec: MeshSpec, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    yield from _run(idmesh_spec, tmp_path_factory.mktemp("idmesh"))


@pytest.fixture
def idmesh_fresh_mesh(idmesh_spec: MeshSpec, tmp_path: Path) -> Iterator[Mesh]:
    yield from _run(idmesh_spec, tmp_path / "idmesh")


try:
    import pytest_asyncio
except ImportError:  # the client fixture needs it; the mesh fixtures do not
    pass
else:

    @pytest_asyncio.fixture
    async def idmesh_client(idmesh_mesh: Mesh) -> AsyncIterator[MeshClient]:
        client = MeshClient(idmesh_mesh)
        try:
            yield client
        finally:
            await client.close()
