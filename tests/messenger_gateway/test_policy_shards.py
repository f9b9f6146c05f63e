"""The delivery policy in shards: the shard function, the split of a decision into the sender's
and the recipient's side, shards loaded from a filtered snapshot and caught up before they are
served, on each engine."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from services.common import failpoints
from services.common.config import Env
from services.common.errors import InvalidInput
from services.common.storage import StoreSettings
from services.messenger_gateway.main import GatewayStores, open_stores
from services.messenger_gateway.policy.forwarding import ShardedDecisions
from services.messenger_gateway.policy.index import PolicyIndex
from services.messenger_gateway.policy.model import (
    ChangeKind,
    DeliveryReason,
    MessageKind,
    PolicyChange,
    SenderRule,
)
from services.messenger_gateway.policy.service import PolicyService, PolicySettings
from services.messenger_gateway.policy.shards import (
    ShardedIndex,
    ShardNotServed,
    combine,
    recipient_part,
    recipient_part_by_rules,
    sender_part,
    sender_part_by_rules,
    shard_of,
)
from tests.messenger_gateway.fakes import FakeClock, make_service
from tests.messenger_gateway.test_policy import NOW, consent, ident, order, rule, unaccepted

PEOPLE = [f"p{i}" for i in range(12)]
PHONES = {p: f"+7903000{i:04d}" for i, p in enumerate(PEOPLE)}


def test_a_users_shard_is_the_same_in_every_process_and_spread_evenly() -> None:
    # CRC-32 of the UTF-8 id: fixed values, whatever the process's hash seed
    assert [shard_of(u, 64) for u in ("alice", "bob", "пользователь")] == [7, 0, 14]
    counts = [0] * 64
    for n in range(64_000):
        counts[shard_of(f"user-{n:07d}", 64)] += 1
    assert max(counts) < 1.1 * 1000 and min(counts) > 0.9 * 1000


def _random_changes(rng: random.Random) -> list[PolicyChange]:
    changes: list[tuple[ChangeKind, dict[str, str]]] = []
    for p in PEOPLE[:-2]:  # the last two stay unknown
        state = rng.choice(["IDENTIFIED", "IDENTIFIED", "REVOKED", "AWAITING_CODE"])
        changes.append(ident(p, state, PHONES[p]))
    for _ in range(15):
        a, b = rng.sample(PEOPLE, 2)
        changes.append(
            rng.choice(
                [
                    rule(a, b, rng.choice(["ACCEPTED", "REFUSED", "NONE"])),
                    unaccepted(a, rng.choice(["ALLOW", "REFUSE", "DEFAULT"])),
                    consent(a, b, rng.choice(["GRANTED", "REVOKED"])),
                ]
            )
        )
    for n in range(rng.randrange(3)):
        target = rng.choice(PEOPLE)
        by_phone = rng.random() < 0.5
        changes.append(
            order(
                f"o{n}",
                user="" if by_phone else target,
                phone=PHONES[target] if by_phone else "",
                scope=rng.choice(["ALL_MESSAGES", "AUTOMATED"]),
                state=rng.choice(["IN_FORCE", "IN_FORCE", "RECEIVED"]),
            )
        )
    return [
        PolicyChange(version=v, changed_at=NOW, kind=kind, **fields)
        for v, (kind, fields) in enumerate(changes, start=1)
    ]


def test_decisions_over_shards_agree_with_the_whole_index_on_random_indexes() -> None:
    """Each change applied to the shard it concerns, each decision's sides read from their own
    shard: the same answer as the whole index, for every pair and kind."""
    rng = random.Random(1801)
    for _ in range(150):
        refuse = rng.random() < 0.3
        whole = PolicyIndex(refuse_unaccepted_by_default=refuse)
        sharded = ShardedIndex(4, refuse_unaccepted_by_default=refuse)
        sharded.install({}, 0)
        sharded.shards.update({s: sharded.new_index() for s in range(4)})
        for change in _random_changes(rng):
            whole.apply(change)
            sharded.apply(change)
        for sender in PEOPLE:
            for recipient in PEOPLE:
                for kind in MessageKind:
                    expected = whole.decide(sender, recipient, kind)
                    assert sharded.decide(sender, recipient, kind) is expected
                    sx, rx = sharded.index_of(sender), sharded.index_of(recipient)
                    assert sx is not None and rx is not None
                    split = combine(
                        sender_part(sx, sender, kind), recipient_part(rx, sender, recipient, kind)
                    )
                    assert split is expected, (sender, recipient, kind)
                    # the fast sides are the rules' sides written out
                    assert sender_part(sx, sender, kind) is sender_part_by_rules(sx, sender, kind)
                    assert recipient_part(rx, sender, recipient, kind) is (
                        recipient_part_by_rules(rx, sender, recipient, kind)
                    )


def test_a_shard_not_served_here_gives_no_decision() -> None:
    sharded = ShardedIndex(2)
    sharded.install({}, 0)
    sharded.shards[shard_of("p0", 2)] = sharded.new_index()
    other = next(p for p in PEOPLE if shard_of(p, 2) != shard_of("p0", 2))
    assert sharded.decide("p0", other, MessageKind.PERSONAL) is None
    assert sharded.decide(other, "p0", MessageKind.PERSONAL) is None
    assert sharded.decide("p0", "p0", MessageKind.PERSONAL) is not None


def test_a_shard_count_out_of_range_is_refused() -> None:
    for count in (0, 5000):
        with pytest.raises(ValueError, match="shard count"):
            ShardedIndex(count)


# --- shards loaded from the store ------------------------------------------------------------

USERS = [f"u{n}" for n in range(16)]
NUMBERS = {user: f"+790312300{n:02d}" for n, user in enumerate(USERS)}
ROUTES = dict.fromkeys(NUMBERS.values(), "beeline")
SHARDS = 4


@pytest.fixture
async def stores(tmp_path: Path, store_env: dict[str, str]) -> AsyncIterator[GatewayStores]:
    """A store on each engine with USERS identified, the even ones refusing u1."""
    environ = {f"IDMESH_{key}": value for key, value in store_env.items()}
    settings = StoreSettings.from_env(Env({"IDMESH_DB_PATH": str(tmp_path / "gw.db"), **environ}))
    async with open_stores(settings) as opened:
        service = make_service(opened.gateway, routes=ROUTES)
        for user, phone in NUMBERS.items():
            await service.start_identification(user, phone)
        clock = FakeClock()
        for user in USERS[::2]:
            await opened.policy.set_sender_rule(user, "u1", SenderRule.REFUSED, clock.now())
        yield opened


async def _whole(stores: GatewayStores) -> PolicyService:
    whole = PolicyService(PolicySettings(), store=stores.policy)
    await whole.start()
    return whole


def _all_parts(
    replicas: list[PolicyService],
) -> dict[tuple[str, str, MessageKind], DeliveryReason]:
    """Every pair's decision, each side asked of the replica serving it."""
    out = {}
    for sender in [*USERS, "nobody"]:
        for recipient in [*USERS, "nobody"]:
            for kind in MessageKind:
                s_side = next(
                    r for r in replicas if shard_of(sender, SHARDS) in r.served_shards()
                ).decide_parts([(sender, kind)], [])[0][0]
                r_side = next(
                    r for r in replicas if shard_of(recipient, SHARDS) in r.served_shards()
                ).decide_parts([], [(sender, recipient, kind)])[1][0]
                out[sender, recipient, kind] = combine(s_side, r_side).reason
    return out


def _reference(whole: PolicyService) -> dict[tuple[str, str, MessageKind], DeliveryReason]:
    return {
        (s, r, k): whole.index.decide(s, r, k).reason
        for s in [*USERS, "nobody"]
        for r in [*USERS, "nobody"]
        for k in MessageKind
    }


async def test_two_replicas_each_loading_half_the_shards_decide_as_the_whole_index(
    stores: GatewayStores,
) -> None:
    whole = await _whole(stores)
    halves = [PolicyService(PolicySettings(shards=SHARDS), store=stores.policy) for _ in range(2)]
    for replica, shards in zip(halves, ([0, 1], [2, 3]), strict=True):
        await replica.start()
        await replica.add_shards(shards)
        assert replica.served_shards() == frozenset(shards)
        assert replica.position() == whole.position()
    assert _all_parts(halves) == _reference(whole)
    entries = [h.sharded.entries for h in halves if h.sharded is not None]
    assert sum(entries) == len(USERS) + len(USERS[::2])  # every user and rule, once
    # a write through one replica reaches the other's shard by its tail (here: catch_up)
    version = await halves[0].set_sender_rule("u3", "u5", SenderRule.REFUSED)
    await halves[1].catch_up()
    await whole.catch_up()
    assert _all_parts(halves) == _reference(whole)
    owner = next(h for h in halves if shard_of("u3", SHARDS) in h.served_shards())
    assert owner.sharded is not None
    index = owner.sharded.index_of("u3")
    assert index is not None and index.refused("u3", "u5")
    assert halves[1].position() >= version
    halves[0].drop_shards([0])
    assert halves[0].served_shards() == frozenset({1})


async def test_a_shard_is_served_only_once_loaded_and_caught_up_past_writes_during_its_load(
    stores: GatewayStores, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The load stalls (a failpoint) after the snapshot is read: a decision for the shard waits
    (or is refused), and a rule written meanwhile is in the shard once it is served."""
    monkeypatch.setenv(failpoints.ENV, "gateway.policy.shard_load=sleep(700)")
    failpoints.reload()
    try:
        replica = PolicyService(PolicySettings(shards=SHARDS), store=stores.policy)
        await replica.start()
        recipient = USERS[2]
        shard = shard_of(recipient, SHARDS)
        loading = asyncio.create_task(replica.add_shards([shard]))
        await asyncio.sleep(0)  # the load has begun
        with pytest.raises(ShardNotServed) as refused:
            await replica.wait_served({shard}, timeout=0.05)
        assert refused.value.metadata["loading"] == "true"
        with pytest.raises(ShardNotServed):  # a shard nobody loads here: refused at once
            await replica.wait_served({(shard + 1) % SHARDS}, timeout=5)
        version = await stores.policy.set_sender_rule(
            recipient, "u7", SenderRule.REFUSED, FakeClock().now()
        )
        await replica.wait_served({shard}, timeout=10)
        await loading
        assert replica.position() >= version
        index = replica.sharded.index_of(recipient) if replica.sharded else None
        assert index is not None and index.refused(recipient, "u7")
    finally:
        monkeypatch.delenv(failpoints.ENV)
        failpoints.reload()


async def test_a_replica_without_shards_follows_the_log_and_refuses_parts(
    stores: GatewayStores,
) -> None:
    replica = PolicyService(PolicySettings(shards=SHARDS), store=stores.policy)
    await replica.start()
    _, head = await stores.policy.log_bounds()
    assert replica.position() == head
    with pytest.raises(ShardNotServed):
        replica.decide_parts([("u0", MessageKind.PERSONAL)], [])


# --- decisions over the owners of the shards (policy/forwarding.py) ---------------------------


class FakeOwners:
    """Shards 0-1 here, 2-3 at "other" (or nowhere while `gone`)."""

    address = "here"

    def __init__(self) -> None:
        self.gone = False
        self.refreshed = 0

    def owner_address(self, shard: int) -> str | None:
        if shard < 2:
            return "here"
        return None if self.gone else "other"

    async def refresh(self) -> None:
        self.refreshed += 1


class FakePeers:
    """The other replica, in-process; refuses its first `failures` calls."""

    def __init__(self, other: PolicyService, failures: int = 0) -> None:
        self.other, self.failures, self.calls = other, failures, 0

    async def decide_parts(
        self,
        address: str,
        *,
        shard_count: int,
        min_version: int,
        senders: Sequence[tuple[str, MessageKind]],
        recipients: Sequence[tuple[str, str, MessageKind]],
        timeout: float,
    ) -> tuple[list[DeliveryReason], list[DeliveryReason], int]:
        assert (address, shard_count) == ("other", SHARDS)
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError("the owner cannot be reached")
        await self.other.reach(min_version)
        s, r, version = self.other.decide_parts(senders, recipients)
        return [d.reason for d in s], [d.reason for d in r], version


async def _two_halves(stores: GatewayStores) -> tuple[PolicyService, PolicyService]:
    here, other = (PolicyService(PolicySettings(shards=SHARDS), store=stores.policy) for _ in "ab")
    for replica, shards in ((here, [0, 1]), (other, [2, 3])):
        await replica.start()
        await replica.add_shards(shards)
    return here, other


async def test_forwarded_decisions_equal_the_whole_index_and_survive_a_failing_owner(
    stores: GatewayStores,
) -> None:
    whole = await _whole(stores)
    here, other = await _two_halves(stores)
    owners, peers = FakeOwners(), FakePeers(other, failures=2)
    decisions = ShardedDecisions(here, owners, peers)
    pairs = [(s, r, k) for s in [*USERS, "nobody"] for r in [*USERS, "nobody"] for k in MessageKind]
    got, version = await decisions.decide(pairs, 0, timeout=10)
    assert [d.reason for d in got] == [whole.index.decide(s, r, k).reason for s, r, k in pairs]
    assert version == whole.position()
    assert peers.calls == 3 and owners.refreshed == 2  # asked again after each failure


async def test_a_shard_nobody_serves_is_refused_when_the_deadline_passes(
    stores: GatewayStores,
) -> None:
    here, other = await _two_halves(stores)
    owners = FakeOwners()
    owners.gone = True
    decisions = ShardedDecisions(here, owners, FakePeers(other))
    remote = next(u for u in USERS if shard_of(u, SHARDS) >= 2)
    local = next(u for u in USERS if shard_of(u, SHARDS) < 2)
    # the sender's side is another replica's, and nobody serves it now
    with pytest.raises(ShardNotServed) as refused:
        await decisions.decide([(remote, local, MessageKind.PERSONAL)], 0, timeout=0.3)
    assert refused.value.metadata["shard"] == str(shard_of(remote, SHARDS))
    # a sender refused here needs no recipient's side: decided without the missing owner
    decided, _ = await decisions.decide([(local, remote, MessageKind.PERSONAL)], 0, timeout=0.3)
    assert decided[0].reason is DeliveryReason.SENDER_NOT_IDENTIFIED
    assert owners.refreshed >= 1
    with pytest.raises(InvalidInput, match="recipient_id"):
        await decisions.decide([(local, " ", MessageKind.PERSONAL)], 0, timeout=0.3)
