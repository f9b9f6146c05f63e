"""A registry replica cut from the notifier while it holds the outbox's claim on a termination
notice: the other replica publishes the notice through its own notifier while the partition
lasts, and once it heals the notice has reached the messenger once."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from services.localmesh.client import log_lines_with, mesh_client
from services.localmesh.eventually import eventually
from services.localmesh.netns import Network

from .conftest import hosted_mesh, identified_user

pytestmark = pytest.mark.mesh

CUT, OTHER = "registry-beeline", "registry-beeline-2"


@pytest.mark.timeout(300)
async def test_a_registry_cut_from_the_notifier_leaves_its_notices_to_the_other(
    network: Network, tmp_path: Path
) -> None:
    async with (
        hosted_mesh(network, tmp_path / "mesh") as hosted,
        mesh_client(hosted.mesh) as client,
    ):
        mesh = hosted.mesh
        number = await identified_user(client)

        other = mesh.services[OTHER]
        other.signal(signal.SIGSTOP)  # the cut replica's relay claims the notice first
        try:
            network.partition(hosted.hosts[CUT], hosted.hosts["notifier"])
            assert await client.terminate_contract("beeline", number) == 1

            async def claimed() -> bool:
                rows = await hosted.select(CUT, "SELECT claimed_by FROM outbox")
                return len(rows) == 1 and rows[0]["claimed_by"] is not None

            await eventually(claimed, within=30, what="the cut replica's claim")
            await eventually(
                lambda: log_lines_with(mesh, CUT, "relay.publish_failed"),
                within=60,
                what="the cut replica's Publish to fail",
            )
        finally:
            other.signal(signal.SIGCONT)

        # the partition lasts: the other replica's relay publishes through its notifier
        revoked = await client.wait_revoked("alpha", "user-1", timeout=90)
        assert revoked.reason
        published = await hosted.select(CUT, "SELECT published_at FROM outbox")
        assert published[0]["published_at"] is not None
        assert log_lines_with(mesh, OTHER, "relay.published")

        network.heal(hosted.hosts[CUT], hosted.hosts["notifier"])
        events = await hosted.select("notifier", "SELECT seq, event_id FROM events")
        inbox = await hosted.select("gateway-alpha", "SELECT seq, event_id FROM notice_inbox")
        assert [r["seq"] for r in events] == [1]
        assert [(r["seq"], r["event_id"]) for r in inbox] == [
            (r["seq"], r["event_id"]) for r in events
        ]
