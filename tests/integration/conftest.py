"""The whole mesh as real processes on free ports, reused by every integration test module."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from services.localmesh import (
    Blackhole,
    Mesh,
    MeshClient,
    MeshSpec,
    MessengerSpec,
    OperatorSpec,
    demo_spec,
    mesh_client,
)

DEMO = demo_spec()


@pytest.fixture(scope="session")
def blackhole() -> Iterator[Blackhole]:
    hole = Blackhole()
    yield hole
    hole.close()


GAMMA_WINDOW_SECONDS = 8.0


def mesh_spec(blackhole: Blackhole, **overrides: object) -> MeshSpec:
    """The demo topology on free ports, plus messenger gamma with a short window whose T2 numbers
    route to an operator that never answers. gamma's window is short for a test to wait out, and
    long enough for a test to kill the gateway mid-verification before it ends, on a loaded
    machine."""
    operators = tuple(
        OperatorSpec(o.operator_id, o.carrier_name, o.seed_file) for o in DEMO.operators
    )
    messengers = (
        MessengerSpec("alpha", verification_window_seconds=30),
        MessengerSpec("beta", verification_window_seconds=30),
        MessengerSpec(
            "gamma",
            verification_window_seconds=GAMMA_WINDOW_SECONDS,
            extra_operators={"t2": blackhole.address},
            extra_carriers={"T2": "t2"},
        ),
    )
    spec = MeshSpec(operators=operators, messengers=messengers)
    for key, value in overrides.items():
        object.__setattr__(spec, key, value)
    return spec


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, blackhole: Blackhole) -> Iterator[Mesh]:
    the_mesh = Mesh(mesh_spec(blackhole), tmp_path_factory.mktemp("mesh"))
    the_mesh.start()
    yield the_mesh
    codes = the_mesh.stop()
    assert all(code == 0 for code in codes.values()), f"unclean shutdown: {codes}"


@pytest.fixture
async def client(mesh: Mesh) -> AsyncIterator[MeshClient]:
    async with mesh_client(mesh) as c:
        yield c


def data_dir(mesh: Mesh) -> Path:
    return mesh.data_dir
