"""The delivery policy in shards over real processes on PostgreSQL: two gateway replicas of
messenger alpha, IDMESH_POLICY_SHARDS=16, each serving half the shards and holding about half the
index; decisions from either equal the whole index's (the reference, built from the same store);
the owner of half the shards killed under a load of decisions: every decision right, none read
from a shard still loading (a failpoint stalls each shard's load after its snapshot, and a rule
written meanwhile is in the decision), the shards served again by the survivor within the bound;
the restarted replica takes its half back."""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import grpc
import pytest
from idmesh.gateway.v1 import gateway_pb2

from bench.seed import policy_user, seed_policy_pg
from services.common.storage import StoreSettings
from services.localmesh import Mesh, MeshClient, MeshSpec, MessengerSpec, demo_spec, mesh_client
from services.localmesh.postgres import create_databases, database_name, with_database
from services.localmesh.spec import PostgresSpec
from services.messenger_gateway.main import open_stores
from services.messenger_gateway.policy.index import PolicyIndex
from services.messenger_gateway.policy.model import MessageKind
from services.messenger_gateway.policy.shards import shard_of
from tests.eventually import eventually
from tests.integration.test_metrics import scrape, value

pytestmark = pytest.mark.mesh

PB = gateway_pb2
USERS = 6_000
SHARDS = 16
LEASE_SECONDS = 2.0
LOAD_STALL_MS = 1500  # every shard load stalls this long after its snapshot
SURVIVOR, VICTIM = "gateway-alpha", "gateway-alpha-2"
KIND_PB = {
    MessageKind.PERSONAL: PB.MESSAGE_KIND_PERSONAL,
    MessageKind.AUTOMATED: PB.MESSAGE_KIND_AUTOMATED,
    MessageKind.STATE_MAILING: PB.MESSAGE_KIND_STATE_MAILING,
}
# A shard dead for lease + a third of it, then loaded (stalled by the failpoint), within 10 s
# per million users (here: a floor of 10 s).
TAKEOVER_BOUND = LEASE_SECONDS * 4 / 3 + LOAD_STALL_MS / 1000 + 10.0 * max(1.0, USERS / 1e6)

Pair = tuple[str, str, MessageKind]


@pytest.fixture(scope="module")
def prefix() -> str:
    return f"s{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def gateway_url(postgres_admin_url: str, prefix: str) -> str:
    """The gateway's database, seeded with USERS identified users and their preferences."""
    database = database_name(prefix, "gateway-alpha")
    asyncio.run(create_databases(postgres_admin_url, [database]))
    url = with_database(postgres_admin_url, database)
    asyncio.run(seed_policy_pg(url, USERS, datetime.now(UTC)))
    return url


@pytest.fixture(scope="module")
def mesh(
    tmp_path_factory: pytest.TempPathFactory, postgres_admin_url: str, prefix: str, gateway_url: str
) -> Iterator[Mesh]:
    demo = demo_spec()
    spec = MeshSpec(
        operators=tuple(
            type(o)(o.operator_id, o.carrier_name, o.seed_file) for o in demo.operators
        ),
        messengers=(
            MessengerSpec(
                "alpha",
                replicas=2,
                env={
                    "IDMESH_POLICY_SHARDS": str(SHARDS),
                    "IDMESH_LEASE_SECONDS": str(LEASE_SECONDS),
                    "IDMESH_FAILPOINTS": f"gateway.policy.shard_load=sleep({LOAD_STALL_MS})",
                },
            ),
        ),
        postgres=PostgresSpec(url=postgres_admin_url, database_prefix=prefix),
    )
    the_mesh = Mesh(spec, tmp_path_factory.mktemp("policy-shards"))
    try:
        the_mesh.start(timeout=60)
        yield the_mesh
    finally:
        the_mesh.stop()
        the_mesh.drop_databases()


@pytest.fixture
async def client(mesh: Mesh) -> AsyncIterator[MeshClient]:
    async with mesh_client(mesh) as c:
        yield c


async def reference(url: str) -> PolicyIndex:
    """The whole index, as one unsharded replica holds it, from the same store."""
    settings = StoreSettings(database_url=url)
    async with open_stores(settings) as stores:
        return await stores.policy.load_index(refuse_unaccepted_by_default=False)


def random_pairs(rng: random.Random, count: int, *, avoid: str = "") -> list[Pair]:
    """Pairs of seeded users, neighbours often (they have rules), one in twenty unknown."""
    pairs: list[Pair] = []
    while len(pairs) < count:
        i = rng.randrange(USERS)
        j = (i + rng.choice([1, 2, 3, rng.randrange(USERS)])) % USERS
        sender, recipient = policy_user(j), policy_user(i)
        if rng.random() < 0.05:
            recipient = f"nobody-{rng.randrange(100)}"
        if avoid in (sender, recipient):
            continue
        pairs.append((sender, recipient, rng.choice(list(MessageKind))))
    return pairs


async def batch(client: MeshClient, replica: str, pairs: list[Pair], **kw: int) -> list[int]:
    reply = await client.gateway("alpha", replica).CheckDeliveryBatch(
        PB.CheckDeliveryBatchRequest(
            pairs=[
                PB.DeliveryPair(sender_id=s, recipient_id=r, kind=KIND_PB[k]) for s, r, k in pairs
            ],
            **kw,
        ),
        timeout=30,
    )
    return list(reply.reasons)


async def single(client: MeshClient, replica: str, pair: Pair, **kw: int) -> int:
    s, r, k = pair
    reply = await client.gateway("alpha", replica).CheckDelivery(
        PB.CheckDeliveryRequest(sender_id=s, recipient_id=r, kind=KIND_PB[k], **kw), timeout=30
    )
    return int(reply.reason)


def expected(index: PolicyIndex, pairs: list[Pair]) -> list[int]:
    return [
        PB.DeliveryReason.Value(f"DELIVERY_REASON_{index.decide(s, r, k).reason.value}")
        for s, r, k in pairs
    ]


def shard_figures(mesh: Mesh, name: str) -> tuple[float, float]:
    """(shards served, index entries) from the replica's /metrics."""
    samples = scrape(mesh.metrics_address(name))
    served = value(samples, "idmesh_gateway_policy_shards_served") or 0.0
    entries = value(samples, "idmesh_gateway_policy_index_entries") or 0.0
    return served, entries


async def served_counts(mesh: Mesh, *names: str) -> list[float]:
    return [(await asyncio.to_thread(shard_figures, mesh, n))[0] for n in names]


def total_entries() -> int:
    """Users, sender rules, unaccepted-sender policies and consents of seed_policy."""
    rules = sum(1 for i in range(USERS) if i % 3 != 2)
    return USERS + rules + len(range(0, USERS, 10)) + len(range(0, USERS, 5))


async def until_halves(mesh: Mesh) -> None:
    async def halves() -> bool:
        return await served_counts(mesh, SURVIVOR, VICTIM) == [SHARDS / 2, SHARDS / 2]

    await eventually(halves, within=60, what="each replica serving half the shards")


async def test_two_replicas_each_serve_half_the_shards_and_hold_at_most_55_percent(
    mesh: Mesh,
) -> None:
    await until_halves(mesh)
    entries = [(await asyncio.to_thread(shard_figures, mesh, n))[1] for n in (SURVIVOR, VICTIM)]
    total = total_entries()
    assert sum(entries) == total  # every entry held once
    for held in entries:
        assert held <= 0.55 * total, (entries, total)


async def test_decisions_from_either_replica_equal_the_whole_index(
    mesh: Mesh, client: MeshClient, gateway_url: str
) -> None:
    await until_halves(mesh)
    index = await reference(gateway_url)
    rng = random.Random(1801)
    for replica in ("", "-2"):
        pairs = random_pairs(rng, 3000)
        for start in range(0, len(pairs), 1000):
            chunk = pairs[start : start + 1000]
            assert await batch(client, replica, chunk) == expected(index, chunk)
        for pair in pairs[:150]:
            assert await single(client, replica, pair) == expected(index, [pair])[0], pair


async def test_min_version_holds_across_shards(mesh: Mesh, client: MeshClient) -> None:
    """A rule set through one replica, for a recipient whose shard the other serves, applies at
    the other from the version the write returned."""
    await until_halves(mesh)
    recipient = next(
        policy_user(i) for i in range(2, USERS, 3) if shard_of(policy_user(i), SHARDS) % 2
    )
    sender = policy_user(5000)
    reply = await client.gateway("alpha").SetSenderRule(
        PB.SetSenderRuleRequest(user_id=recipient, sender_id=sender, rule=PB.SENDER_RULE_REFUSED)
    )
    for replica in ("", "-2"):
        pair = (sender, recipient, MessageKind.PERSONAL)
        got = await single(client, replica, pair, min_version=reply.version)
        assert got == PB.DELIVERY_REASON_RECIPIENT_REFUSED_SENDER
        assert await batch(client, replica, [pair], min_version=reply.version) == [got]
    await client.gateway("alpha").SetSenderRule(
        PB.SetSenderRuleRequest(user_id=recipient, sender_id=sender, rule=PB.SENDER_RULE_NONE)
    )


async def test_the_owner_killed_under_load_every_decision_is_right_and_its_shards_come_back(
    mesh: Mesh, client: MeshClient, gateway_url: str
) -> None:
    await until_halves(mesh)
    index = await reference(gateway_url)
    # a recipient in the victim's shards, and a rule written for it while its shard reloads
    victim_shards = set(range(SHARDS)) - set(await _survivor_shards(mesh))
    target = next(
        policy_user(i)
        for i in range(2, USERS, 3)  # no rule of its own (i % 3 == 2)
        if shard_of(policy_user(i), SHARDS) in victim_shards
    )
    sender = policy_user(4321)
    checked, failures = 0, []
    stop = asyncio.Event()

    async def load(seed: int) -> None:
        nonlocal checked
        rng = random.Random(seed)
        while not stop.is_set():
            pairs = random_pairs(rng, 200, avoid=target)
            try:
                if rng.random() < 0.5:
                    got = await batch(client, "", pairs)
                else:
                    got = [await single(client, "", pairs[0])]
                    pairs = pairs[:1]
            except grpc.aio.AioRpcError as exc:
                failures.append(f"{exc.code().name}: {exc.details()}")
                continue
            want = expected(index, pairs)
            wrong = [(p, g, w) for p, g, w in zip(pairs, got, want, strict=True) if g != w]
            failures.extend(f"wrong decision {w}" for w in wrong)
            checked += len(pairs)

    loads = [asyncio.create_task(load(n)) for n in range(3)]
    try:
        await eventually(lambda: checked > 2000, within=60, what="decisions under load")
        stalls_before = _stalls(mesh)
        killed_at = time.monotonic()
        await asyncio.to_thread(mesh.kill, VICTIM)

        async def loading() -> bool:
            samples = await asyncio.to_thread(scrape, mesh.metrics_address(SURVIVOR))
            return (value(samples, "idmesh_gateway_policy_shards_loading") or 0) > 0

        # the survivor owns the victim's shards and has read their snapshot, not served them:
        # a rule written now is in no snapshot, only in the log after it
        await eventually(loading, within=30, interval=0.05, what="the takeover's load")
        reply = await client.gateway("alpha").SetSenderRule(
            PB.SetSenderRuleRequest(user_id=target, sender_id=sender, rule=PB.SENDER_RULE_REFUSED)
        )
        pair = (sender, target, MessageKind.PERSONAL)
        got = await single(client, "", pair, min_version=reply.version)  # waits for the shard
        assert got == PB.DELIVERY_REASON_RECIPIENT_REFUSED_SENDER

        async def all_served() -> bool:
            return await served_counts(mesh, SURVIVOR) == [SHARDS]

        await eventually(all_served, within=60, what="the survivor serving every shard")
        took = time.monotonic() - killed_at
        done = checked
        await eventually(lambda: checked > done + 1000, within=60, what="decisions after")
    finally:
        stop.set()
        await asyncio.gather(*loads)
    assert not failures, failures[:5]
    assert _stalls(mesh) > stalls_before  # the takeover's loads did stall (the window was open)
    assert took <= TAKEOVER_BOUND, f"shards served again after {took:.1f} s"

    # the replica back: it takes half the shards again, decisions still right
    await asyncio.to_thread(mesh.restart, VICTIM, 60)
    await until_halves(mesh)
    index = await reference(gateway_url)
    pairs = random_pairs(random.Random(7), 1000)
    for replica in ("", "-2"):
        assert await batch(client, replica, pairs) == expected(index, pairs)
    await client.gateway("alpha").SetSenderRule(
        PB.SetSenderRuleRequest(user_id=target, sender_id=sender, rule=PB.SENDER_RULE_NONE)
    )


async def _survivor_shards(mesh: Mesh) -> list[int]:
    """The shards the survivor serves, from its log (policy.shards_served minus dropped)."""
    served: set[int] = set()
    for line in mesh.services[SURVIVOR].log_path.read_text().splitlines():
        if not line.startswith("{"):
            continue
        entry = json.loads(line)
        if entry.get("event") == "policy.shards_served":
            served |= set(entry["shards"])
        elif entry.get("event") == "policy.shards_dropped":
            served -= set(entry["shards"])
    return sorted(served)


def _stalls(mesh: Mesh) -> int:
    text = mesh.services[SURVIVOR].log_path.read_text()
    return text.count('"failpoint": "gateway.policy.shard_load"')
