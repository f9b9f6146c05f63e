"""A gateway replica cut from the database while it holds verification leases: each replica and
the database run on a host of their own (a network namespace on a bridge). The cut replica's
leases expire, the other replica takes the verifications over (under new fencing tokens) and
finishes them; once the partition heals, the cut replica's writes are refused, none is finished
twice and none is lost."""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path

import asyncpg
import grpc
import pytest
from idmesh.registry.v1 import registry_pb2

from services.localmesh import Mesh
from services.localmesh.client import MeshClient, State, log_lines_with, mesh_client
from services.localmesh.eventually import eventually
from services.localmesh.netns import Host, Network

from .conftest import hosted_mesh

pytestmark = pytest.mark.mesh

LEASE_SECONDS = 3.0
USERS = 4
CUT, OTHER = "gateway-alpha", "gateway-alpha-2"


@pytest.mark.timeout(300)
async def test_a_gateway_cut_from_the_database_hands_its_verifications_over(
    network: Network, tmp_path: Path
) -> None:
    env = {"IDMESH_LEASE_SECONDS": str(LEASE_SECONDS)}
    async with hosted_mesh(network, tmp_path / "mesh", gateway_env=env) as hosted:
        await cut_while_holding_leases(network, hosted.mesh, hosted.hosts[CUT], hosted.hosts["db"])


async def verifications(url: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        return list(
            await conn.fetch(
                "SELECT identification_id, user_id, state, identification_code, lease_holder, "
                "lease_token FROM identifications ORDER BY seq"
            )
        )
    finally:
        await conn.close()


async def cut_while_holding_leases(network: Network, mesh: Mesh, cut: Host, db: Host) -> None:
    url = mesh.services[CUT].env["IDMESH_DATABASE_URL"]
    process = mesh.services[CUT].process
    cut_pid = process.pid if process is not None else 0
    async with mesh_client(mesh) as client:
        await client.registry_admin("beeline").RegisterMessenger(
            registry_pb2.RegisterMessengerRequest(messenger_id="alpha"), timeout=10
        )
        numbers = [await client.create_subscriber("beeline") for _ in range(USERS)]
        # The cut replica's registry holds its answers back: the verifications stay pending
        # (VERIFYING, leased by the cut replica) until it is cut off.
        registry = mesh.services["registry-beeline"]
        registry.signal(signal.SIGSTOP)
        try:
            users = [f"user-{i}" for i in range(USERS)]
            for user, number in zip(users, numbers, strict=True):
                started = await client.start("alpha", user, number)
                pending = await client.confirm_pending("alpha", started)
                assert pending.state == State.IDENTIFICATION_STATE_VERIFYING

            async def all_leased_by_the_cut_replica() -> bool:
                rows = await verifications(url)
                return len(rows) == USERS and all(
                    r["state"] == "VERIFYING"
                    and (r["lease_holder"] or "").endswith(f"-{cut_pid}")
                    and r["lease_token"] == 1
                    for r in rows
                )

            await eventually(
                all_leased_by_the_cut_replica, within=30, what="the cut replica's leases"
            )
            network.partition(cut, db)
        finally:
            registry.signal(signal.SIGCONT)  # its answers reach the cut replica, too late

        async def all_identified() -> list[asyncpg.Record] | None:
            rows = await verifications(url)
            done = all(r["state"] == "IDENTIFIED" for r in rows)
            return rows if done else None

        rows = await eventually(
            all_identified, within=LEASE_SECONDS * 4 + 60, what="the other replica to finish"
        )
        ids = [r["identification_id"] for r in rows]
        for r in rows:  # taken over by the replica that can reach the database, once: the
            # claim raised the token, and the cut replica's writes (under token 1) are refused
            assert not (r["lease_holder"] or "").endswith(f"-{cut_pid}")
            assert r["lease_token"] == 2

        def finished_by_other() -> bool:  # its log line follows the commit
            lines = log_lines_with(mesh, OTHER, "identification.finished")
            return Counter(line["identification_id"] for line in lines) == Counter(ids)

        await eventually(finished_by_other, within=30, what="the other replica's log lines")

        network.heal(cut, db)
        # healed: the cut replica reaches the database again and finds every verification it
        # held taken over by the other: the answer it had kept is refused (its fencing token
        # is no longer the row's: lease.fenced), or its renewal finds the lease taken and stops
        # the verification first, or the verification's task ended on the unreachable store
        # during the cut
        await eventually(
            lambda: _serving(client, CUT), within=60, what="the cut replica SERVING again"
        )

        def stopped_at_the_cut_replica() -> set[str]:
            return {
                line["identification_id"]
                for event in (
                    "lease.fenced",
                    "verification.lease_lost",
                    "verification.task_failed",
                )
                for line in log_lines_with(mesh, CUT, event)
                if "identification_id" in line  # not the notice consumer's lease
            }

        await eventually(
            lambda: stopped_at_the_cut_replica() >= set(ids),
            within=60,
            what="the cut replica to give up every verification it held",
        )
        finished = Counter(
            line["identification_id"]
            for service in (CUT, OTHER)
            for line in log_lines_with(mesh, service, "identification.finished")
        )
        assert finished == Counter(ids), "a verification finished twice, or lost"
        for row, number in zip(await verifications(url), numbers, strict=True):
            assert row["state"] == "IDENTIFIED"
            assert row["identification_code"] == (await client.bindings("beeline", number))["alpha"]


async def _serving(client: MeshClient, service: str) -> bool:
    try:
        await client.identification("alpha", "nobody", replica=service.removeprefix(CUT))
    except grpc.aio.AioRpcError as exc:
        return bool(exc.code() == grpc.StatusCode.NOT_FOUND)
    return True
