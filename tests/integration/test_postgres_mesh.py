"""The mesh on PostgreSQL with two replicas of every service (issue 12, item 4).

The identification, notification and porting flows run once more (the same test functions as on
SQLite, over this module's mesh), then the kill test: under a load of identifications and
terminations, one replica of every registry, the notifier and every gateway is killed (SIGKILL),
and nothing acknowledged is lost, nothing is applied twice, and no user is left VERIFYING.

One mesh for the module: 2 registries, the notifier and 3 gateways, two replicas each, every
deployment with a database of its own on the test session's PostgreSQL server.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import asyncpg
import grpc
import pytest
from idmesh.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from idmesh.registry.v1 import registry_pb2, registry_pb2_grpc

from services.common.channels import open_channel
from services.common.identity import Caller, Kind, Role
from services.localmesh import Blackhole, Mesh, MeshClient, PostgresSpec
from services.operator_registry.store_pg import RELAY_LEASE_SECONDS
from tests.eventually import eventually
from tests.integration.conftest import mesh_spec
from tests.integration.test_identification import (
    new_subscriber,
    test_operator_that_does_not_answer_times_out_after_the_window,  # noqa: F401
    test_subscriber_is_identified_and_may_send,  # noqa: F401
    test_two_messengers_get_different_codes,  # noqa: F401
    test_wrong_code_counts_attempts_until_the_limit,  # noqa: F401
    user,
)
from tests.integration.test_notifications import (
    test_both_gateway_processes_of_a_messenger_see_the_revocation_once,  # noqa: F401
    test_registry_killed_after_terminate_commits_publishes_after_restart,  # noqa: F401
    test_termination_revokes_every_bound_messenger_and_only_that_user,  # noqa: F401
    wait_acked,
)
from tests.integration.test_porting import (
    test_port_out_revokes_and_the_donors_hint_leads_to_the_recipient,  # noqa: F401
)

pytestmark = pytest.mark.mesh

State = gateway_pb2.IdentificationState
IDENTIFIED = State.IDENTIFICATION_STATE_IDENTIFIED
REVOKED = State.IDENTIFICATION_STATE_REVOKED
PENDING = {State.IDENTIFICATION_STATE_AWAITING_CODE, State.IDENTIFICATION_STATE_VERIFYING}
REPLICAS = ("", "-2")
AGREEMENTS = {"beeline": ("alpha", "beta"), "megafon": ("alpha",)}  # deploy/demo's seeds
S = TypeVar("S")
T = TypeVar("T")


@pytest.fixture(scope="module")
def mesh(
    tmp_path_factory: pytest.TempPathFactory, blackhole: Blackhole, postgres_admin_url: str
) -> Iterator[Mesh]:
    postgres = PostgresSpec(url=postgres_admin_url, database_prefix=f"m{uuid.uuid4().hex[:10]}")
    spec = mesh_spec(
        blackhole,
        postgres=postgres,
        replicas=2,
        common_env={"IDMESH_PROGRESS_INTERVAL_SECONDS": "1"},
    )
    the_mesh = Mesh(spec, tmp_path_factory.mktemp("mesh-pg"))  # conftest's `client` uses it
    try:
        the_mesh.start(timeout=60)
        yield the_mesh
    finally:
        codes = the_mesh.stop()
        the_mesh.drop_databases()
    assert all(code == 0 for code in codes.values()), f"unclean shutdown: {codes}"


def test_every_service_runs_two_replicas_each_on_its_own_database(mesh: Mesh) -> None:
    deployments: dict[str, set[str]] = {}
    for name, svc in mesh.services.items():
        deployments.setdefault(svc.info["deployment"], set()).add(name)
        assert svc.running, name
    assert deployments == {
        d: {d, f"{d}-2"}
        for d in (
            "notifier",
            "registry-beeline",
            "registry-megafon",
            "gateway-alpha",
            "gateway-beta",
            "gateway-gamma",
        )
    }
    urls = {d: mesh.services[d].env["IDMESH_DATABASE_URL"] for d in deployments}
    assert len(set(urls.values())) == len(urls)  # a database per deployment
    for d, names in deployments.items():
        assert {mesh.services[n].env["IDMESH_DATABASE_URL"] for n in names} == {urls[d]}


async def test_a_policy_change_at_one_gateway_replica_applies_at_the_other(
    mesh: Mesh, client: MeshClient
) -> None:
    sender, recipient = user(), user()
    for u in (sender, recipient):
        await client.identify("alpha", u, await new_subscriber(client, "beeline", "+7903"))
    replicas = Replicas(mesh)
    try:
        one, two = replicas.gateways["alpha"]
        rule = await one.SetSenderRule(
            gateway_pb2.SetSenderRuleRequest(
                user_id=recipient, sender_id=sender, rule=gateway_pb2.SENDER_RULE_REFUSED
            )
        )
        decided = await two.CheckDelivery(
            gateway_pb2.CheckDeliveryRequest(
                sender_id=sender,
                recipient_id=recipient,
                kind=gateway_pb2.MESSAGE_KIND_PERSONAL,
                min_version=rule.version,
            )
        )
        assert decided.reason == gateway_pb2.DELIVERY_REASON_RECIPIENT_REFUSED_SENDER
        # and the change stream of one replica carries what the other wrote, in version order
        consent = await two.SetAutomatedConsent(
            gateway_pb2.SetAutomatedConsentRequest(
                user_id=recipient,
                sender_id="bot",
                consent=gateway_pb2.AUTOMATED_CONSENT_STATE_GRANTED,
            )
        )
        watch = one.WatchPolicyChanges(
            gateway_pb2.WatchPolicyChangesRequest(after_version=rule.version)
        )
        seen: list[int] = []
        while consent.version not in seen:
            item = await asyncio.wait_for(watch.read(), 30)
            seen.extend(c.version for c in item.changes)
        watch.cancel()
        assert seen[: consent.version - rule.version] == list(
            range(rule.version + 1, consent.version + 1)
        )
    finally:
        await replicas.close()


# -- the kill test ---------------------------------------------------------------------------


@dataclass
class Replicas:
    """Stubs for both replicas of each service; a call goes to one replica, then to the other
    when that one is unavailable (a front end behind a load balancer would do the same)."""

    mesh: Mesh
    channels: list[grpc.aio.Channel] = field(default_factory=list)
    turn: Iterator[int] = field(default_factory=itertools.count)

    def _channel(self, service: str, identity: Caller) -> grpc.aio.Channel:
        channel = open_channel(
            self.mesh.address(service), identity=identity, tls=self.mesh.credentials(identity)
        )
        self.channels.append(channel)
        return channel

    def __post_init__(self) -> None:
        self.gateways = {
            m: [
                gateway_pb2_grpc.GatewayServiceStub(
                    self._channel(f"gateway-{m}{r}", Caller(Kind.MESSENGER, m, Role.FRONTEND))
                )
                for r in REPLICAS
            ]
            for m in ("alpha", "beta")
        }
        self.registries = {
            o: [
                registry_pb2_grpc.RegistryAdminServiceStub(
                    self._channel(f"registry-{o}{r}", Caller(Kind.OPERATOR, o, Role.ADMIN))
                )
                for r in REPLICAS
            ]
            for o in ("beeline", "megafon")
        }

    async def call(self, stubs: list[S], do: Callable[[S], Awaitable[T]]) -> T:
        """do(stub) at one replica, the other when it is UNAVAILABLE (bounded: 30 s)."""
        start = next(self.turn)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        for attempt in itertools.count(start):
            try:
                return await do(stubs[attempt % len(stubs)])
            except grpc.aio.AioRpcError as exc:
                retry = exc.code() in (
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                )
                if not retry or loop.time() > deadline:
                    raise
            await asyncio.sleep(0.05)  # a retry's pause, not synchronisation
        raise AssertionError("unreachable")

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()


@dataclass
class Ledger:
    """What the load saw acknowledged."""

    identified: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # phone -> users
    terminated: list[str] = field(default_factory=list)  # acknowledged TerminateContract
    started: list[tuple[str, str]] = field(default_factory=list)  # (messenger, user)


async def identify_anywhere(
    replicas: Replicas, client: MeshClient, messenger: str, phone: str, ledger: Ledger
) -> str:
    """Start at one replica, confirm at either; a confirmation cut off by a kill is followed to
    its end at the other replica (the pending verification is resumed there)."""
    u = user()
    ledger.started.append((messenger, u))
    stubs = replicas.gateways[messenger]
    started = await replicas.call(
        stubs,
        lambda s: s.StartIdentification(
            gateway_pb2.StartIdentificationRequest(
                user_id=u, phone_number=phone, idempotency_key=uuid.uuid4().hex
            ),
            timeout=10,
        ),
    )
    ident = started.identification
    code = client.sms_code(messenger, ident.identification_id)
    try:
        await replicas.call(
            stubs,
            lambda s: s.ConfirmPossession(
                gateway_pb2.ConfirmPossessionRequest(
                    identification_id=ident.identification_id, code=code
                ),
                timeout=20,
            ),
        )
    except grpc.aio.AioRpcError as exc:
        # Cut off after the code was taken (the replica died while verifying): the outcome is
        # the identification's, wherever it finishes.
        assert exc.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND), exc

    async def finished() -> gateway_pb2.Identification | None:
        reply = await replicas.call(
            stubs,
            lambda s: s.GetIdentification(
                gateway_pb2.GetIdentificationRequest(user_id=u), timeout=5
            ),
        )
        return None if reply.identification.state in PENDING else reply.identification

    final = await eventually(finished, within=60, what=f"{messenger}'s verification of {u}")
    assert final.state == IDENTIFIED, final
    return u


async def round_of_load(
    replicas: Replicas, client: MeshClient, operator: str, prefix: str, ledger: Ledger
) -> None:
    phone = await new_subscriber(client, operator, prefix)
    users = [
        (m, await identify_anywhere(replicas, client, m, phone, ledger))
        for m in AGREEMENTS[operator]
    ]
    ledger.identified[phone] = users
    try:
        reply = await replicas.call(
            replicas.registries[operator],
            lambda s: s.TerminateContract(
                registry_pb2.TerminateContractRequest(phone_number=phone), timeout=10
            ),
        )
    except grpc.aio.AioRpcError:
        return  # not acknowledged (maybe applied): nothing to hold the mesh to
    assert reply.notices_queued == len(users)
    ledger.terminated.append(phone)


async def fetch(url: str, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


# the load, the kills and restarts, a dead relay's claim expiring, then the mesh's teardown
@pytest.mark.timeout(420)
async def test_killing_a_replica_of_each_service_under_load_loses_nothing_and_repeats_nothing(
    mesh: Mesh, client: MeshClient
) -> None:
    # The second replica of every service, as when the host they share dies: the first
    # replicas, each calling the others' first replicas (the local mesh's lanes), carry on.
    victims = [name for name in mesh.services if name.endswith("-2")]
    replicas = Replicas(mesh)
    ledger = Ledger()
    operators = (("beeline", "+7903"), ("megafon", "+7921"))

    async def worker(n: int, rounds: int) -> None:
        for r in range(rounds):
            operator, prefix = operators[(n + r) % 2]
            await round_of_load(replicas, client, operator, prefix, ledger)

    try:
        load = asyncio.ensure_future(asyncio.gather(*(worker(n, 3) for n in range(4))))
        await eventually(
            lambda: load.done() or len(ledger.terminated) >= 3, within=90, what="load running"
        )
        if load.done():
            load.result()  # the load's own failure, if any
        for name in victims:  # mid-load: identifications and terminations in flight
            mesh.kill(name)
        await load
        assert len(ledger.terminated) >= 6, f"too few terminations acknowledged: {ledger}"
        # The orchestrator starts the killed replicas again.
        for name in victims:
            await asyncio.to_thread(mesh.restart, name, 60)

        # Nothing lost: every acknowledged termination revoked at every bound messenger.
        for phone in ledger.terminated:
            for messenger, u in ledger.identified[phone]:
                await client.wait_state(messenger, u, {REVOKED}, timeout=60)
        for messenger in ("alpha", "beta"):
            await wait_acked(client, messenger, timeout=60)

        # The outbox settles: a notice the killed replica published but died before marking
        # is marked by the survivor once the dead replica's claim on it expires
        # (RELAY_LEASE_SECONDS); a notice it claimed but never published is published then.
        url = {name: mesh.services[name].env["IDMESH_DATABASE_URL"] for name in mesh.services}

        async def outbox_settled() -> bool:
            for op in ("beeline", "megafon"):
                pending = await fetch(
                    url[f"registry-{op}"],
                    "SELECT event_id FROM outbox WHERE published_at IS NULL AND parked_at IS NULL",
                )
                if pending:
                    return False
            return True

        await eventually(
            outbox_settled, within=RELAY_LEASE_SECONDS + 60, what="every outbox notice published"
        )
        for messenger in ("alpha", "beta"):
            await wait_acked(client, messenger, timeout=60)

        # Nothing twice: each messenger's sequence gap-free, each outbox event published once
        # and applied once at the gateway.
        outbox = [
            (row["messenger_id"], row["event_id"])
            for op in ("beeline", "megafon")
            for row in await fetch(
                url[f"registry-{op}"],
                "SELECT messenger_id, event_id FROM outbox",
            )
        ]
        events = await fetch(url["notifier"], "SELECT messenger_id, seq, event_id FROM events")
        for messenger in ("alpha", "beta"):
            seqs = sorted(e["seq"] for e in events if e["messenger_id"] == messenger)
            assert seqs == list(range(1, len(seqs) + 1)), f"{messenger}: gaps in {seqs}"
            published = sorted(e for m, e in outbox if m == messenger)
            held = sorted(e["event_id"] for e in events if e["messenger_id"] == messenger)
            assert held == published  # each outbox notice once (UNIQUE event_id besides)
            inbox = await fetch(
                url[f"gateway-{messenger}"], "SELECT event_id, seq FROM notice_inbox"
            )
            assert sorted(r["event_id"] for r in inbox) == held
            assert sorted(r["seq"] for r in inbox) == seqs

        # No user left VERIFYING (a killed replica's pending verifications were resumed).
        for messenger in ("alpha", "beta"):
            rows = await fetch(
                url[f"gateway-{messenger}"],
                "SELECT identification_id FROM identifications WHERE state = 'VERIFYING'",
            )
            assert rows == [], f"{messenger}: left VERIFYING: {rows}"
    finally:
        await replicas.close()
        for name in victims:
            if not mesh.services[name].running:
                await asyncio.to_thread(mesh.restart, name, 60)
