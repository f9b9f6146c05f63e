"""Hosts of their own on a bridge (network namespaces): needs `ip netns add`, which root has.

hosted_mesh: one operator (beeline), one messenger (alpha), two replicas of every service, each
replica and the PostgreSQL server on a host of its own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from idmesh.gateway.v1 import gateway_pb2
from idmesh.registry.v1 import registry_pb2

from services.localmesh import Mesh, MeshClient, MeshSpec, MessengerSpec, OperatorSpec, PostgresSpec
from services.localmesh.netns import Host, Network
from services.localmesh.postgres import PostgresCluster

REPLICAS = (
    "notifier",
    "notifier-2",
    "registry-beeline",
    "registry-beeline-2",
    "gateway-alpha",
    "gateway-alpha-2",
)


@pytest.fixture
def network() -> Iterator[Network]:
    why = Network.available()
    if why is not None:
        pytest.skip(why)
    with Network.create() as net:
        yield net


@dataclass
class HostedMesh:
    mesh: Mesh
    hosts: dict[str, Host]  # replica name, or "db" -> its host

    def url(self, service: str) -> str:
        return self.mesh.services[service].env["IDMESH_DATABASE_URL"]

    async def select(self, service: str, sql: str) -> list[asyncpg.Record]:
        """Rows of service's database (read from the test's own namespace)."""
        conn = await asyncpg.connect(self.url(service), timeout=10)
        try:
            return list(await conn.fetch(sql))
        finally:
            await conn.close()


@asynccontextmanager
async def hosted_mesh(
    network: Network, data_dir: Path, *, gateway_env: Mapping[str, str] | None = None
) -> AsyncIterator[HostedMesh]:
    db = network.add("db")
    hosts = {
        name: network.add(name.replace("gateway", "gw").replace("registry", "reg"))
        for name in REPLICAS
    }
    with PostgresCluster.create(host=db.ip, netns=db.netns) as pg:
        spec = MeshSpec(
            operators=(OperatorSpec("beeline", "Beeline"),),
            messengers=(
                MessengerSpec(
                    "alpha", verification_window_seconds=300, env=dict(gateway_env or {})
                ),
            ),
            postgres=PostgresSpec(url=pg.url, pool_size=3),
            replicas=2,
            common_env={
                "IDMESH_VERIFY_RETRY_MAX_SECONDS": "1",
                "IDMESH_NOTIFIER_RETRY_MAX_SECONDS": "1",
                "IDMESH_RELAY_POLL_SECONDS": "0.5",
                "IDMESH_RELAY_RETRY_MAX_SECONDS": "1",
                "IDMESH_PROGRESS_INTERVAL_SECONDS": "1",
                "IDMESH_LOG_LEVEL": "info",
            },
        )
        mesh = Mesh(spec, data_dir, hosts=hosts)
        await asyncio.to_thread(mesh.start, 120.0)
        try:
            yield HostedMesh(mesh, {**hosts, "db": db})
        finally:
            await asyncio.to_thread(mesh.stop)


async def identified_user(client: MeshClient, user: str = "user-1") -> str:
    """Beeline agrees with alpha, and user is identified at alpha on a new subscriber's number
    (returned): what each partition test starts from."""
    await client.registry_admin("beeline").RegisterMessenger(
        registry_pb2.RegisterMessengerRequest(messenger_id="alpha"), timeout=10
    )
    number = await client.create_subscriber("beeline")
    identified = await client.identify("alpha", user, number)
    assert identified.state == gateway_pb2.IdentificationState.IDENTIFICATION_STATE_IDENTIFIED
    return number
