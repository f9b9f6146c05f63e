"""A termination wins over any operator answer, whatever the order they arrive in.

The sequence that once lost a revocation for good, reproduced with a failpoint over the real
mesh: the registry answers IDENTIFIED, the gateway dies before recording the answer; the contract
is terminated and its notice applied (after the gateway's restart) while the identification is
still VERIFYING, so it revokes nothing; the resumed verification asks again with the same
idempotency key. Neither the registry's answer to that repeat nor the gateway's record of it may
make the user identified on the ended contract.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc
import pytest
from idmesh.gateway.v1 import gateway_pb2
from idmesh.notifier.v1 import notifier_pb2

from services.common.failpoints import ENV as FAILPOINTS
from services.localmesh import Mesh, MeshClient, MeshSpec, MessengerSpec, demo_spec, mesh_client
from tests.eventually import eventually
from tests.integration.test_identification import new_subscriber, user
from tests.integration.test_notifications import terminate

pytestmark = pytest.mark.mesh

State = gateway_pb2.IdentificationState
Reason = gateway_pb2.Reason


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    demo = demo_spec()
    spec = MeshSpec(
        operators=tuple(
            type(o)(o.operator_id, o.carrier_name, o.seed_file) for o in demo.operators
        ),
        # a window long enough for two restarts on a loaded 2-core machine
        messengers=(MessengerSpec("beta", verification_window_seconds=180),),
        common_env={"IDMESH_PROGRESS_INTERVAL_SECONDS": "1"},
    )
    the_mesh = Mesh(spec, tmp_path_factory.mktemp("mesh"))
    the_mesh.start()
    yield the_mesh
    the_mesh.stop()


@pytest.fixture
async def client(mesh: Mesh) -> AsyncIterator[MeshClient]:
    async with mesh_client(mesh) as c:
        yield c


async def delivery(client: MeshClient) -> notifier_pb2.GetDeliveryStatusResponse:
    reply: notifier_pb2.GetDeliveryStatusResponse = await client.notifier_as(
        "beta"
    ).GetDeliveryStatus(notifier_pb2.GetDeliveryStatusRequest(messenger_id="beta"), timeout=5)
    return reply


async def eventually_status(
    client: MeshClient, done: Callable[[Any], bool], what: str, timeout: float = 60
) -> notifier_pb2.GetDeliveryStatusResponse:
    async def reached() -> notifier_pb2.GetDeliveryStatusResponse | None:
        status = await delivery(client)
        return status if done(status) else None

    result: notifier_pb2.GetDeliveryStatusResponse = await eventually(
        reached, within=timeout, what=what
    )
    return result


async def test_a_verification_resumed_after_its_contract_ended_does_not_identify(
    client: MeshClient, mesh: Mesh
) -> None:
    phone = await new_subscriber(client, "beeline", "+7903")
    u = user()
    gateway = mesh.services["gateway-beta"]
    head = (await delivery(client)).head_seq

    # 1. The registry answers IDENTIFIED (and binds beta); the gateway dies before recording it.
    gateway.env[FAILPOINTS] = "gateway.verify.after_answer"
    mesh.restart("gateway-beta")
    try:
        started = await client.start("beta", u, phone)
        with pytest.raises(grpc.aio.AioRpcError):
            await client.confirm("beta", started, timeout=30)
        assert gateway.wait(15) == 137, "the failpoint did not fire"
    finally:
        del gateway.env[FAILPOINTS]
    assert "beta" in await client.bindings("beeline", phone)

    # 2. The contract ends; its notice for beta reaches the notifier. The registry then goes
    #    down, so the resumed verification cannot get its answer before the notice is applied.
    assert await terminate(client, "beeline", phone) == 1
    await eventually_status(client, lambda s: s.head_seq == head + 1, "the notice published")
    mesh.kill("registry-beeline")

    # 3. The gateway restarts: it resumes the verification (the operator is unreachable) and
    #    applies the notice, which revokes nothing: the identification is VERIFYING.
    mesh.restart("gateway-beta")
    await eventually_status(client, lambda s: s.acked_seq == head + 1, "the notice applied")
    pending = await client.wait_state("beta", u, {State.IDENTIFICATION_STATE_VERIFYING})
    assert pending.identification_id == started.identification_id

    # 4. The operator is back; the resumed verification asks again with the same key.
    mesh.restart("registry-beeline")
    ended = await client.wait_state(
        "beta",
        u,
        {State.IDENTIFICATION_STATE_NOT_COMPLETED, State.IDENTIFICATION_STATE_IDENTIFIED},
        timeout=60,
    )
    assert ended.state == State.IDENTIFICATION_STATE_NOT_COMPLETED, ended
    assert ended.reason in {Reason.REASON_CONTRACT_TERMINATED, Reason.REASON_NO_SUBSCRIBER}
    access = await client.gateway("beta").CheckAccess(gateway_pb2.CheckAccessRequest(user_id=u))
    assert not access.allowed
