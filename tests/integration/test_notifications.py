"""Contract-termination notices end to end: registry outbox -> notifier -> gateway revocation,
with processes killed (-9) at the worst moments, losing nothing and applying nothing twice."""

from __future__ import annotations

import contextlib
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from idmesh.events.v1 import events_pb2
from idmesh.gateway.v1 import gateway_pb2
from idmesh.notifier.v1 import notifier_pb2
from idmesh.registry.v1 import registry_pb2

from services.common.failpoints import ENV as FAILPOINTS
from services.localmesh import (
    Mesh,
    MeshClient,
    MeshSpec,
    MessengerSpec,
    demo_spec,
    log_lines_with,
    mesh_client,
)
from tests.eventually import eventually
from tests.integration.test_identification import new_subscriber, user

pytestmark = pytest.mark.mesh

State = gateway_pb2.IdentificationState
Reason = gateway_pb2.Reason
REVOKED = {State.IDENTIFICATION_STATE_REVOKED}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    """The demo topology on free ports, with two gateway processes for alpha sharing one store."""
    demo = demo_spec()
    spec = MeshSpec(
        operators=tuple(
            type(o)(o.operator_id, o.carrier_name, o.seed_file) for o in demo.operators
        ),
        messengers=(
            MessengerSpec("alpha", verification_window_seconds=30, replicas=2),
            MessengerSpec("beta", verification_window_seconds=30),
        ),
        common_env={"IDMESH_PROGRESS_INTERVAL_SECONDS": "1"},
    )
    the_mesh = Mesh(spec, tmp_path_factory.mktemp("mesh"))
    the_mesh.start()
    yield the_mesh
    the_mesh.stop()


@pytest.fixture
async def client(mesh: Mesh) -> MeshClient:  # type: ignore[misc]
    async with mesh_client(mesh) as c:
        yield c


async def identified(client: MeshClient, messenger: str, phone: str) -> str:
    u = user()
    done = await client.identify(messenger, u, phone)
    assert done.state == State.IDENTIFICATION_STATE_IDENTIFIED, done
    return u


async def terminate(
    client: MeshClient,
    operator: str,
    phone: str,
    reason: events_pb2.TerminationReason = events_pb2.TERMINATION_REASON_UNSPECIFIED,
) -> int:
    reply: registry_pb2.TerminateContractResponse = await client.registry_admin(
        operator
    ).TerminateContract(
        registry_pb2.TerminateContractRequest(phone_number=phone, reason=reason), timeout=5
    )
    return reply.notices_queued


async def status(client: MeshClient, messenger: str) -> notifier_pb2.GetDeliveryStatusResponse:
    reply: notifier_pb2.GetDeliveryStatusResponse = await client.notifier_as(
        messenger
    ).GetDeliveryStatus(notifier_pb2.GetDeliveryStatusRequest(messenger_id=messenger), timeout=5)
    return reply


async def wait_acked(client: MeshClient, messenger: str, timeout: float = 30) -> None:
    """Until the messenger's gateways have acked everything the notifier holds for it."""

    async def acked() -> bool:
        s = await status(client, messenger)
        return bool(s.acked_seq == s.head_seq)

    await eventually(acked, within=timeout, what=f"{messenger} to ack every notice")


async def terminate_all(
    client: MeshClient, phones: list[str], messenger: str, head_seq: int
) -> None:
    """End the contracts of phones at beeline; return once the notifier holds their notices."""
    for p in phones:
        await terminate(client, "beeline", p)

    async def received() -> bool:
        return bool((await status(client, messenger)).head_seq >= head_seq + len(phones))

    await eventually(received, within=30, what="the notifier to receive the burst")


async def test_termination_revokes_every_bound_messenger_and_only_that_user(
    client: MeshClient,
) -> None:
    phone = await new_subscriber(client, "beeline", "+7903")
    other = await new_subscriber(client, "beeline", "+7903")
    a, b = await identified(client, "alpha", phone), await identified(client, "beta", phone)
    bystander = await identified(client, "alpha", other)

    assert await terminate(client, "beeline", phone) == 2

    for messenger, u in (("alpha", a), ("beta", b)):
        revoked = await client.wait_state(messenger, u, REVOKED, timeout=15)
        assert revoked.reason == Reason.REASON_CONTRACT_TERMINATED
        access = await client.gateway(messenger).CheckAccess(
            gateway_pb2.CheckAccessRequest(user_id=u)
        )
        assert not access.allowed
        assert access.reason == Reason.REASON_CONTRACT_TERMINATED
    still = await client.gateway("alpha").CheckAccess(
        gateway_pb2.CheckAccessRequest(user_id=bystander)
    )
    assert still.allowed


async def log_line(
    mesh: Mesh, service: str, trace_id: str, match: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """The first log line of `service` that carries trace_id and matches (waits for it)."""
    found: dict[str, Any] = await eventually(
        lambda: next((x for x in log_lines_with(mesh, service, trace_id) if match(x)), None),
        within=15,
        what=f"{service} to log {trace_id}",
    )
    return found


async def test_a_terminations_trace_id_follows_its_notice_to_the_gateway(
    client: MeshClient, mesh: Mesh
) -> None:
    phone = await new_subscriber(client, "beeline", "+7903")
    u = await identified(client, "beta", phone)
    trace_id = f"trace-{uuid.uuid4().hex}"
    await client.registry_admin("beeline").TerminateContract(
        registry_pb2.TerminateContractRequest(phone_number=phone),
        metadata=(("x-request-id", trace_id),),
        timeout=5,
    )
    await client.wait_state("beta", u, REVOKED, timeout=15)
    # the notifier logged the publish with the event's trace id, the gateway its application
    await log_line(mesh, "notifier", trace_id, lambda line: trace_id in line.get("trace_ids", ()))
    # ...at info, in the line of the stream message that carried the notice
    applied = await log_line(
        mesh, "gateway-beta", trace_id, lambda line: line.get("event") == "notices.applied"
    )
    assert trace_id in applied["trace_ids"] and applied["revoked"] >= 1


async def test_revoked_user_identifies_again_under_a_new_contract_with_a_new_code(
    client: MeshClient,
) -> None:
    phone = await new_subscriber(client, "megafon", "+7926")
    u = await identified(client, "alpha", phone)
    old_code = (await client.bindings("megafon", phone))["alpha"]
    await terminate(client, "megafon", phone)
    await client.wait_state("alpha", u, REVOKED, timeout=15)

    again = await client.identify("alpha", u, phone)
    assert again.state == State.IDENTIFICATION_STATE_NOT_COMPLETED
    assert again.reason == Reason.REASON_NO_SUBSCRIBER

    await client.registry_admin("megafon").CreateSubscriber(
        registry_pb2.CreateSubscriberRequest(phone_number=phone, contract_id=uuid.uuid4().hex[:12]),
        timeout=5,
    )
    again = await client.identify("alpha", u, phone)
    assert again.state == State.IDENTIFICATION_STATE_IDENTIFIED
    assert (await client.bindings("megafon", phone))["alpha"] != old_code


async def test_port_out_reason_reaches_the_gateway(client: MeshClient) -> None:
    phone = await new_subscriber(client, "beeline", "+7905")
    u = await identified(client, "beta", phone)
    await terminate(client, "beeline", phone, events_pb2.TERMINATION_REASON_PORTED_OUT)
    revoked = await client.wait_state("beta", u, REVOKED, timeout=15)
    assert revoked.reason == Reason.REASON_PORTED_OUT


async def test_both_gateway_processes_of_a_messenger_see_the_revocation_once(
    client: MeshClient,
) -> None:
    phone = await new_subscriber(client, "beeline", "+7903")
    u = await identified(client, "alpha", phone)
    await terminate(client, "beeline", phone)
    for replica in ("", "-2"):
        revoked = await client.wait_state("alpha", u, REVOKED, timeout=15, replica=replica)
        assert revoked.reason == Reason.REASON_CONTRACT_TERMINATED
    await wait_acked(client, "alpha")


async def test_gateway_down_for_a_burst_catches_up_in_order(client: MeshClient, mesh: Mesh) -> None:
    phones = [await new_subscriber(client, "beeline", "+7964") for _ in range(8)]
    users = [await identified(client, "beta", p) for p in phones]
    await wait_acked(client, "beta")
    before = await status(client, "beta")
    mesh.kill("gateway-beta")
    try:
        await terminate_all(client, phones, "beta", before.head_seq)
    finally:
        mesh.restart("gateway-beta")
    for u in users:
        await client.wait_state("beta", u, REVOKED, timeout=15)
    await wait_acked(client, "beta")
    # In order: the notices streamed after the cursor are the burst, with consecutive seqs.
    call = client.notifier_as("beta").Subscribe(
        notifier_pb2.SubscribeRequest(
            messenger_id="beta", after_seq=before.head_seq, max_batch_size=1000
        ),
        timeout=15,
    )
    seqs: list[int] = []
    numbers: list[str] = []
    async for item in call:
        seqs.extend(n.seq for n in item.notices)
        numbers.extend(n.event.phone_number for n in item.notices)
        if len(seqs) >= len(phones):
            break
    call.cancel()
    assert seqs == list(range(before.head_seq + 1, before.head_seq + 1 + len(phones)))
    assert numbers == phones


async def test_gateway_killed_inside_a_batch_of_notices_loses_nothing_and_applies_each_once(
    client: MeshClient, mesh: Mesh
) -> None:
    phones = [await new_subscriber(client, "beeline", "+7964") for _ in range(4)]
    users = [await identified(client, "beta", p) for p in phones]
    await wait_acked(client, "beta")
    before = await status(client, "beta")
    gateway = mesh.services["gateway-beta"]
    mesh.kill("gateway-beta")
    try:
        await terminate_all(client, phones, "beta", before.head_seq)
        # The backlog comes in one message; the gateway dies inside its transaction.
        gateway.env[FAILPOINTS] = "gateway.notice.before_commit"
        gateway.start()
        assert gateway.wait(60) == 137, "the failpoint did not fire"
    finally:
        gateway.env.pop(FAILPOINTS, None)
        mesh.restart("gateway-beta")
    for u in users:
        revoked = await client.wait_state("beta", u, REVOKED, timeout=60)
        assert revoked.reason == Reason.REASON_CONTRACT_TERMINATED
    await wait_acked(client, "beta", timeout=60)
    after = await status(client, "beta")
    assert after.head_seq == after.acked_seq == before.head_seq + len(phones)


async def test_registry_killed_after_terminate_commits_publishes_after_restart(
    client: MeshClient, mesh: Mesh
) -> None:
    phone = await new_subscriber(client, "megafon", "+7921")
    u = await identified(client, "alpha", phone)
    mesh.kill("notifier")  # the relay cannot publish ...
    try:
        await terminate(client, "megafon", phone)
        mesh.kill("registry-megafon")  # ... and the registry dies with the notice in its outbox
    finally:
        mesh.restart("notifier")
        mesh.restart("registry-megafon")
    revoked = await client.wait_state("alpha", u, REVOKED, timeout=60)
    assert revoked.reason == Reason.REASON_CONTRACT_TERMINATED
    await wait_acked(client, "alpha")


@pytest.mark.parametrize(
    "failpoint", ["notifier.publish.before_commit", "notifier.publish.after_commit"]
)
async def test_notifier_killed_while_taking_a_publish_loses_nothing_and_duplicates_nothing(
    client: MeshClient, mesh: Mesh, failpoint: str
) -> None:
    phone = await new_subscriber(client, "beeline", "+7903")
    u = await identified(client, "beta", phone)
    await wait_acked(client, "beta")
    head = (await status(client, "beta")).head_seq
    notifier = mesh.services["notifier"]
    notifier.env[FAILPOINTS] = failpoint
    mesh.restart("notifier")
    try:
        await terminate(client, "beeline", phone)
        assert notifier.wait(15) == 137, "the failpoint did not fire"
    finally:
        del notifier.env[FAILPOINTS]
        mesh.restart("notifier")
    await client.wait_state("beta", u, REVOKED, timeout=60)
    await wait_acked(client, "beta")
    assert (await status(client, "beta")).head_seq == head + 1  # exactly one event, no duplicate


async def test_notifier_killed_between_streaming_and_the_ack_redelivers_and_applies_once(
    client: MeshClient, mesh: Mesh
) -> None:
    phone = await new_subscriber(client, "beeline", "+7903")
    u = await identified(client, "beta", phone)
    await wait_acked(client, "beta")
    head = (await status(client, "beta")).head_seq
    notifier = mesh.services["notifier"]
    notifier.env[FAILPOINTS] = "notifier.ack.before_commit"
    mesh.restart("notifier")
    try:
        await terminate(client, "beeline", phone)
        assert notifier.wait(15) == 137, "the failpoint did not fire"
    finally:
        del notifier.env[FAILPOINTS]
        mesh.restart("notifier")
    revoked = await client.wait_state("beta", u, REVOKED, timeout=60)
    await wait_acked(client, "beta")
    s = await status(client, "beta")
    assert s.head_seq == s.acked_seq == head + 1
    # Identify again under a new contract: a redelivered old notice must not revoke it.
    await client.registry_admin("beeline").CreateSubscriber(
        registry_pb2.CreateSubscriberRequest(phone_number=phone, contract_id=uuid.uuid4().hex[:12]),
        timeout=5,
    )
    assert revoked.reason == Reason.REASON_CONTRACT_TERMINATED
    again = await client.identify("beta", u, phone)
    assert again.state == State.IDENTIFICATION_STATE_IDENTIFIED
    # The old notice comes again: the gateway restarts from a cursor before it (as after
    # restoring an older copy of its store), so the notifier streams it a second time.
    mesh.kill("gateway-beta")
    try:
        store = mesh.services["gateway-beta"].env["IDMESH_DB_PATH"]
        [(event_id, revocations)] = rewind_cursor(store, "beta", head)
    finally:
        mesh.restart("gateway-beta")
    assert revocations == 1  # the first delivery revoked the old identification

    def redelivered() -> bool:
        return any(
            line["event"] == "notices.applied" and line["duplicates"] == 1
            for line in log_lines_with(mesh, "gateway-beta", event_id)
        )

    await eventually(redelivered, within=60, what="the old notice delivered again")
    await wait_acked(client, "beta")
    access = await client.gateway("beta").CheckAccess(gateway_pb2.CheckAccessRequest(user_id=u))
    assert access.allowed
    now = await client.gateway("beta").GetIdentification(
        gateway_pb2.GetIdentificationRequest(user_id=u), timeout=5
    )
    assert now.identification.identification_id == again.identification_id
    assert now.identification.state == State.IDENTIFICATION_STATE_IDENTIFIED
    assert (await status(client, "beta")).head_seq == head + 1  # nothing new was published

    # And with the inbox row gone too (the store restored from before the notice came), the old
    # notice is applied afresh: it names the old contract's code, so it revokes nothing.
    mesh.kill("gateway-beta")
    try:
        assert rewind_cursor(store, "beta", head, forget_inbox=True) == [(event_id, 1)]
    finally:
        mesh.restart("gateway-beta")

    def applied_again() -> bool:
        return any(
            line["event"] == "notices.applied" and line["applied"] == 1 and line["revoked"] == 0
            for line in log_lines_with(mesh, "gateway-beta", event_id)
        )

    await eventually(applied_again, within=60, what="the old notice applied again")
    await wait_acked(client, "beta")
    now = await client.gateway("beta").GetIdentification(
        gateway_pb2.GetIdentificationRequest(user_id=u), timeout=5
    )
    assert now.identification.identification_id == again.identification_id
    assert now.identification.state == State.IDENTIFICATION_STATE_IDENTIFIED


def rewind_cursor(
    path: str, messenger: str, seq: int, *, forget_inbox: bool = False
) -> list[tuple[str, int]]:
    """Set a stopped gateway's notice cursor back to seq; the inbox rows (event id, revoked)
    of the notices after it, which the notifier will stream again (forget_inbox: and delete
    those rows, so the gateway has no record of having applied them)."""
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("UPDATE notice_cursor SET seq = ? WHERE messenger_id = ?", (seq, messenger))
        rows = [
            (str(event_id), int(revoked))
            for event_id, revoked in conn.execute(
                "SELECT event_id, revoked FROM notice_inbox WHERE seq > ? ORDER BY seq", (seq,)
            )
        ]
        if forget_inbox:
            conn.execute("DELETE FROM notice_inbox WHERE seq > ?", (seq,))
        return rows


async def test_a_messenger_cannot_read_another_messengers_stream(client: MeshClient) -> None:
    call = client.notifier_as("beta").Subscribe(
        notifier_pb2.SubscribeRequest(messenger_id="alpha", after_seq=0), timeout=15
    )
    with pytest.raises(grpc.aio.AioRpcError) as e:
        async for _ in call:
            pass
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "alpha" not in dict(e.value.trailing_metadata() or ()).get("idmesh-head-seq", "")
