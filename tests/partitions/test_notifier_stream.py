"""A notifier replica cut off (its link down) while it streams a messenger's notices to the
gateway replica that consumes them: a termination during the cut is published through the
other notifier replica (durable before the cut heals), and once the link is back the gateway
applies it, once, at the notifier's seq."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.localmesh.client import State, log_lines_with, mesh_client
from services.localmesh.eventually import eventually
from services.localmesh.netns import Network

from .conftest import hosted_mesh, identified_user

pytestmark = pytest.mark.mesh

# replica i of the gateway streams from replica i of the notifier (the local mesh's lanes)
LANES = {"gateway-alpha": "notifier", "gateway-alpha-2": "notifier-2"}


@pytest.mark.timeout(300)
async def test_a_notifier_cut_off_while_streaming_loses_and_repeats_nothing(
    network: Network, tmp_path: Path
) -> None:
    async with (
        hosted_mesh(network, tmp_path / "mesh") as hosted,
        mesh_client(hosted.mesh) as client,
    ):
        mesh = hosted.mesh
        number = await identified_user(client)

        async def consumer() -> str | None:
            """The gateway replica holding the notice stream's lease."""
            rows = await hosted.select("gateway-alpha", "SELECT holder FROM leases")
            for name in LANES:
                process = mesh.services[name].process
                if process and any(r["holder"].endswith(f"-{process.pid}") for r in rows):
                    return name
            return None

        streaming = await eventually(consumer, within=30, what="a notice consumer")
        cut = hosted.hosts[LANES[streaming]]
        network.link(cut, up=False)
        try:
            assert await client.terminate_contract("beeline", number) == 1

            async def published() -> bool:
                rows = await hosted.select("notifier", "SELECT event_id FROM events")
                return len(rows) == 1

            # durable at the notifier through the replica that is still in reach
            await eventually(published, within=60, what="the notice published while cut off")
        finally:
            network.link(cut, up=True)

        revoked = await client.wait_revoked("alpha", "user-1", timeout=90)
        assert revoked.state == State.IDENTIFICATION_STATE_REVOKED
        events = await hosted.select("notifier", "SELECT seq, event_id, acked_at FROM events")
        inbox = await hosted.select("gateway-alpha", "SELECT seq, event_id FROM notice_inbox")
        assert [(r["seq"], r["event_id"]) for r in inbox] == [
            (r["seq"], r["event_id"]) for r in events
        ]
        assert [r["seq"] for r in events] == [1]

        async def acknowledged() -> bool:
            rows = await hosted.select("notifier", "SELECT acked_seq FROM sequences")
            return [r["acked_seq"] for r in rows] == [1]

        await eventually(acknowledged, within=30, what="the notice acknowledged")
        # applied once: one notice in all the gateway replicas' `notices.applied` lines
        applied = [
            line
            for name in LANES
            for line in log_lines_with(mesh, name, "notices.applied")
            if line["event"] == "notices.applied"
        ]
        assert sum(line["count"] for line in applied) == 1
