"""No log line of any service carries a full phone number, an identification code, a one-time
code or a key: a full scenario (identify, a wrong code, terminate, revoke) over the whole mesh,
then every log line of every process is searched."""

from __future__ import annotations

import re

import grpc
import pytest
from idmesh.gateway.v1 import gateway_pb2
from idmesh.registry.v1 import registry_pb2

from services.localmesh import Mesh, MeshClient
from tests.integration.test_identification import new_subscriber, user

pytestmark = pytest.mark.mesh

State = gateway_pb2.IdentificationState


async def test_no_log_line_carries_a_number_a_code_or_a_key(client: MeshClient, mesh: Mesh) -> None:
    phone = await new_subscriber(client, "beeline", "+7903")
    u = user()
    started = await client.start("alpha", u, phone)
    otp = client.sms_code("alpha", started.identification_id)
    wrong = "000000" if otp != "000000" else "111111"
    with pytest.raises(grpc.aio.AioRpcError):
        await client.gateway("alpha").ConfirmPossession(
            gateway_pb2.ConfirmPossessionRequest(
                identification_id=started.identification_id, code=wrong
            ),
            timeout=5,
        )
    assert (await client.confirm("alpha", started)).state == State.IDENTIFICATION_STATE_IDENTIFIED
    beta_user = user()
    beta_started = await client.start("beta", beta_user, phone)
    beta_otp = client.sms_code("beta", beta_started.identification_id)
    await client.confirm("beta", beta_started)
    codes = await client.bindings("beeline", phone)
    assert len(codes) == 2
    await client.registry_admin("beeline").TerminateContract(
        registry_pb2.TerminateContractRequest(phone_number=phone), timeout=5
    )
    await client.wait_state("alpha", u, {State.IDENTIFICATION_STATE_REVOKED}, timeout=15)
    await client.wait_state("beta", beta_user, {State.IDENTIFICATION_STATE_REVOKED}, timeout=15)
    # An invalid number is echoed back masked too.
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.start("alpha", user(), "+74951234567")
    assert "+74951234567" not in (e.value.details() or "")

    mesh.stop()  # flush and close every log
    try:
        lines = [
            (path.name, line)
            for path in sorted((mesh.data_dir / "logs").glob("*.log"))
            for line in path.read_text().splitlines()
        ]
        assert len(lines) > 50
        forbidden = {
            "phone number": re.compile(re.escape(phone[2:])),  # +7 or not, any full form
            "one-time code": re.compile(rf"(?<![\d.]){otp}(?!\d)|(?<![\d.]){beta_otp}(?!\d)"),
            "identification code": re.compile("|".join(map(re.escape, codes.values()))),
            "private key": re.compile("PRIVATE KEY"),
        }
        leaks = [
            f"{what} in {name}: {line[:200]}"
            for name, line in lines
            for what, pattern in forbidden.items()
            if pattern.search(line)
        ]
        assert not leaks, "\n".join(leaks)
        masked = phone[:5] + "*****" + phone[-2:]
        assert any(masked in line for _, line in lines), "numbers are logged masked"
    finally:
        mesh.start()  # the module's mesh fixture stops it again
