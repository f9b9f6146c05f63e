"""Ported numbers end to end, over the mesh as real processes: a port-out revokes the user,
and identifying again reaches the recipient operator through the ported-numbers table or through
the donor's hint (followed once); "has this number changed hands since D?" at the registry and
through the gateway; the table's import with line-numbered errors."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from idmesh.common.v1 import bulk_pb2
from idmesh.events.v1 import events_pb2
from idmesh.gateway.v1 import gateway_pb2
from idmesh.registry.v1 import registry_pb2

from services.common.timeutil import from_timestamp, to_timestamp
from services.localmesh import (
    Mesh,
    MeshClient,
    MeshSpec,
    MessengerSpec,
    OperatorSpec,
    demo_spec,
    mesh_client,
)
from services.localmesh.spec import ROOT
from tests.integration.test_identification import new_subscriber, user

pytestmark = pytest.mark.mesh

State = gateway_pb2.IdentificationState
Reason = gateway_pb2.Reason
IDENTIFIED = State.IDENTIFICATION_STATE_IDENTIFIED
NOT_COMPLETED = State.IDENTIFICATION_STATE_NOT_COMPLETED
REVOKED = State.IDENTIFICATION_STATE_REVOKED
US = timedelta(microseconds=1)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    """The demo topology (beeline, megafon, the notifier) with messenger alpha only."""
    spec = MeshSpec(
        operators=tuple(
            OperatorSpec(o.operator_id, o.carrier_name, o.seed_file) for o in demo_spec().operators
        ),
        messengers=(MessengerSpec("alpha", verification_window_seconds=30),),
    )
    the_mesh = Mesh(spec, tmp_path_factory.mktemp("mesh"))
    the_mesh.start()
    yield the_mesh
    codes = the_mesh.stop()
    assert all(code == 0 for code in codes.values()), f"unclean shutdown: {codes}"


@pytest.fixture
async def client(mesh: Mesh) -> AsyncIterator[MeshClient]:
    async with mesh_client(mesh) as c:
        yield c


async def port_out(client: MeshClient, operator: str, phone: str, to: str) -> Any:
    return await client.registry_admin(operator).PortOut(
        registry_pb2.PortOutRequest(phone_number=phone, recipient_operator_id=to), timeout=5
    )


async def create(client: MeshClient, operator: str, phone: str) -> None:
    await client.registry_admin(operator).CreateSubscriber(
        registry_pb2.CreateSubscriberRequest(
            phone_number=phone, contract_id=f"C-{uuid.uuid4().hex[:10]}"
        ),
        timeout=5,
    )


async def route(client: MeshClient, phone: str) -> gateway_pb2.ResolveOperatorResponse:
    reply: gateway_pb2.ResolveOperatorResponse = await client.gateway_admin(
        "alpha"
    ).ResolveOperator(gateway_pb2.ResolveOperatorRequest(phone_number=phone), timeout=5)
    return reply


async def identified_then_ported(client: MeshClient, to: str = "megafon") -> tuple[str, str, str]:
    """A user of alpha identified at beeline, whose number is then ported out to `to`, and the
    user revoked PORTED_OUT. Returns (phone, user, the old identification code)."""
    phone = await new_subscriber(client, "beeline", "+7903")
    u = user()
    done = await client.identify("alpha", u, phone)
    assert (done.state, done.operator_id) == (IDENTIFIED, "beeline")
    old_code = (await client.bindings("beeline", phone))["alpha"]

    ported = await port_out(client, "beeline", phone, to)

    assert ported.notices_queued == 1
    assert ported.subscriber.termination_reason == events_pb2.TERMINATION_REASON_PORTED_OUT
    assert ported.subscriber.recipient_operator_id == to
    revoked = await client.wait_state("alpha", u, {REVOKED}, timeout=15)
    assert revoked.reason == Reason.REASON_PORTED_OUT
    access = await client.gateway("alpha").CheckAccess(gateway_pb2.CheckAccessRequest(user_id=u))
    assert (access.allowed, access.reason) == (False, Reason.REASON_PORTED_OUT)
    return phone, u, old_code


async def test_port_out_revokes_and_the_donors_hint_leads_to_the_recipient(
    client: MeshClient,
) -> None:
    phone, u, old_code = await identified_then_ported(client)
    await create(client, "megafon", phone)  # the recipient's contract; no table entry
    assert (await route(client, phone)).source == gateway_pb2.ROUTE_SOURCE_NUMBERING_PLAN

    again = await client.identify("alpha", u, phone)

    assert (again.state, again.operator_id) == (IDENTIFIED, "megafon")
    new_code = (await client.bindings("megafon", phone))["alpha"]
    assert new_code != old_code
    remembered = await route(client, phone)
    assert (remembered.operator_id, remembered.source, remembered.configured) == (
        "megafon",
        gateway_pb2.ROUTE_SOURCE_OPERATOR_HINT,
        True,
    )
    # The next identification goes to the recipient directly.
    assert (await client.start("alpha", user(), phone)).operator_id == "megafon"


async def test_port_out_and_the_ported_numbers_table_route_to_the_recipient(
    client: MeshClient, mesh: Mesh, tmp_path: Path
) -> None:
    phone, u, _ = await identified_then_ported(client)
    await create(client, "megafon", phone)
    csv_file = tmp_path / "ported.csv"
    csv_file.write_text(
        f"phone_number,recipient_operator_id,ported_at\n{phone},megafon,{datetime.now(UTC).date()}\n"
    )

    command = ["gateway", "import-ported", "-m", "alpha", str(csv_file), "--all-or-nothing"]
    cli = await asyncio.create_subprocess_exec(  # the CLI streams the file: admin RPC over mTLS
        *[sys.executable, "-m", "services.cli.main", *command],
        *["--data-dir", str(mesh.data_dir), "--json"],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    async with asyncio.timeout(30):
        out, err = await cli.communicate()

    assert cli.returncode == 0, err.decode()
    report = json.loads(out)
    assert (report["imported"], report["rejected"], report["committed"]) == (1, 0, True)
    assert (await route(client, phone)).source == gateway_pb2.ROUTE_SOURCE_PORTED_NUMBERS
    started = await client.start("alpha", u, phone)
    assert started.operator_id == "megafon"  # routed by the table, before asking anyone
    done = await client.confirm("alpha", started)
    assert (done.state, done.operator_id) == (IDENTIFIED, "megafon")


async def test_a_hint_is_followed_at_most_once(client: MeshClient) -> None:
    """beeline says megafon, megafon says beeline: no loop, the user is not identified."""
    phone = await new_subscriber(client, "beeline", "+7903")
    await port_out(client, "beeline", phone, "megafon")
    await create(client, "megafon", phone)
    await port_out(client, "megafon", phone, "beeline")

    done = await client.identify("alpha", user(), phone)

    assert (done.state, done.reason, done.operator_id) == (
        NOT_COMPLETED,
        Reason.REASON_NO_SUBSCRIBER,
        "megafon",
    )


async def test_a_number_ported_to_an_unconfigured_operator_has_no_operator(
    client: MeshClient,
) -> None:
    phone, u, _ = await identified_then_ported(client, to="mts")
    done = await client.identify("alpha", u, phone)
    assert (done.state, done.reason, done.operator_id) == (
        NOT_COMPLETED,
        Reason.REASON_NO_OPERATOR,
        "mts",
    )
    remembered = await route(client, done.phone_number)
    assert (remembered.operator_id, remembered.configured) == ("mts", False)


async def test_the_registry_answers_the_three_reassignment_answers_at_their_boundaries(
    client: MeshClient,
) -> None:
    registry = client.registry_as_messenger("beeline", "alpha")

    async def ask(phone: str, since: datetime | None) -> Any:
        request = registry_pb2.CheckNumberReassignedRequest(phone_number=phone)
        if since is not None:
            request.since.CopyFrom(to_timestamp(since))
        return await registry.CheckNumberReassigned(request, timeout=5)

    def status(reply: Any) -> str:
        return str(registry_pb2.ReassignmentStatus.Name(reply.status)).removeprefix(
            "REASSIGNMENT_STATUS_"
        )

    activated = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    phone = f"+7903{uuid.uuid4().int % 10**7:07d}"
    contract = f"C-{uuid.uuid4().hex[:10]}"
    await client.registry_admin("beeline").CreateSubscriber(
        registry_pb2.CreateSubscriberRequest(
            phone_number=phone, contract_id=contract, activated_at=to_timestamp(activated)
        ),
        timeout=5,
    )
    assert status(await ask(phone, activated - US)) == "REASSIGNED"  # began after since
    assert status(await ask(phone, activated)) == "NOT_REASSIGNED"  # exactly at since: not after

    ported_at = from_timestamp(
        (await port_out(client, "beeline", phone, "megafon")).subscriber.terminated_at
    )
    assert status(await ask(phone, ported_at - US)) == "REASSIGNED"
    assert status(await ask(phone, ported_at)) == "NOT_REASSIGNED"

    never = f"+7905{uuid.uuid4().int % 10**7:07d}"  # no contract here, ever
    begin = from_timestamp((await ask(never, activated)).records_begin_at)
    assert begin <= activated
    assert status(await ask(never, begin)) == "NOT_REASSIGNED"
    assert status(await ask(never, begin - US)) == "NO_DATA"

    for since in (None, datetime.now(UTC) + timedelta(minutes=5)):
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await ask(phone, since)
        assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_the_gateway_asks_whether_the_users_number_changed_hands(client: MeshClient) -> None:
    gateway = client.gateway("alpha")

    async def reassigned(u: str) -> gateway_pb2.CheckNumberReassignedResponse:
        reply: gateway_pb2.CheckNumberReassignedResponse = await gateway.CheckNumberReassigned(
            gateway_pb2.CheckNumberReassignedRequest(user_id=u), timeout=10
        )
        return reply

    phone = await new_subscriber(client, "megafon", "+7926")
    u = user()
    done = await client.identify("alpha", u, phone)
    first = await reassigned(u)
    assert (first.reassignment, first.operator_id, first.phone_number) == (
        gateway_pb2.NUMBER_REASSIGNMENT_NOT_REASSIGNED,
        "megafon",
        phone,
    )
    assert first.since == done.completed_at

    await port_out(client, "megafon", phone, "beeline")
    await client.wait_state("alpha", u, {REVOKED}, timeout=15)
    after = await reassigned(u)
    assert after.reassignment == gateway_pb2.NUMBER_REASSIGNMENT_REASSIGNED
    assert after.since == done.completed_at  # the identification, not the revocation

    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await reassigned("nobody-" + u)
    assert failed.value.code() == grpc.StatusCode.NOT_FOUND
    await client.start("alpha", u, phone)  # a new identification, not identified yet
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await reassigned(u)
    assert failed.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_import_errors_name_their_lines_and_all_or_nothing_stores_nothing(
    client: MeshClient,
) -> None:
    admin = client.gateway_admin("alpha")
    good = f"+7903{uuid.uuid4().int % 10**7:07d}"
    day = to_timestamp(datetime.now(UTC) - timedelta(days=1))

    def pb(line: int, phone: str, operator: str, ported_at: Any = day) -> Any:
        return gateway_pb2.PortedNumber(
            line=line, phone_number=phone, recipient_operator_id=operator, ported_at=ported_at
        )

    def rows() -> list[gateway_pb2.PortedNumber]:
        return [
            pb(2, good, "megafon"),
            pb(3, "+7495123456", "megafon"),
            pb(4, good, "MegaFon"),
            pb(5, good, "megafon", ported_at=None),
        ]

    async def stream(
        mode: bulk_pb2.ImportMode,
    ) -> AsyncIterator[gateway_pb2.ImportPortedNumbersRequest]:
        batch = rows()
        yield gateway_pb2.ImportPortedNumbersRequest(mode=mode, rows=batch[:2])
        yield gateway_pb2.ImportPortedNumbersRequest(rows=batch[2:])

    refused = await admin.ImportPortedNumbers(
        stream(bulk_pb2.IMPORT_MODE_ALL_OR_NOTHING), timeout=10
    )
    assert (refused.imported, refused.rejected, refused.committed) == (0, 3, False)
    assert [e.line for e in refused.errors] == [3, 4, 5]
    assert "phone_number" in refused.errors[0].message
    assert "recipient_operator_id" in refused.errors[1].message
    assert "ported_at is missing" in refused.errors[2].message
    assert (await route(client, good)).source == gateway_pb2.ROUTE_SOURCE_NUMBERING_PLAN

    partial = await admin.ImportPortedNumbers(stream(bulk_pb2.IMPORT_MODE_VALID_ROWS), timeout=10)
    assert (partial.imported, partial.rejected, partial.committed) == (1, 3, True)
    assert (await route(client, good)).source == gateway_pb2.ROUTE_SOURCE_PORTED_NUMBERS
