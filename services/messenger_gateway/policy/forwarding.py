"""Decisions over shards: CheckDelivery and CheckDeliveryBatch at a replica that serves only some
of the shards (policy/shards.py, policy/ownership.py).

A pair whose sender and recipient are both in shards served here is decided here, as without
shards. For the others, the sender's side is asked of the owner of the sender's shard and the
recipient's side of the owner of the recipient's shard (local sides decided here), one
DecideShardParts per owner, all owners at once; a decision is its sender's side when that
refuses, else its recipient's side. An owner that refuses (the shard moved, or is loading) or
cannot be reached sends the replica back to the shards' leases and the undecided pairs are
asked again, until the caller's deadline: a dead owner's shards are asked of the replica that
takes them over, once it has loaded them. No side is ever read from a shard not fully loaded:
an owner answers only for shards it serves.

Forwarding rather than refusing with a routing hint: a pair may need two owners, a batch
needs most of them, and the messenger's front end keeps calling any replica with no knowledge
of shards (a client library built on the first v1 works unchanged).

The answer's version is the lowest of the versions its sides were decided at: every side is at
min_version or later, and the version is common to all shards (the store's change-log version).
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import Sequence
from typing import Protocol

from services.common.errors import InvalidInput
from services.messenger_gateway.identification.model import USER_ID_MAX_LENGTH
from services.messenger_gateway.policy.model import (
    DECISIONS,
    MAX_BATCH_PAIRS,
    Decision,
    DeliveryReason,
    MessageKind,
    validate_pair_user,
)
from services.messenger_gateway.policy.service import PolicyService, count_decisions
from services.messenger_gateway.policy.shards import (
    ShardNotServed,
    combine,
    recipient_part,
    sender_part,
)

RETRY_INITIAL = 0.05
RETRY_MAX = 0.5


class PartsPeer(Protocol):
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
        """The sides from the replica at address; any failure raises (asked again later)."""
        ...


class OwnerMap(Protocol):
    address: str  # this replica's

    def owner_address(self, shard: int) -> str | None: ...

    async def refresh(self) -> None: ...


class _Plan:
    """One owner's share of a round: the sides to ask it."""

    __slots__ = ("recipients", "senders")

    def __init__(self) -> None:
        self.senders: dict[tuple[str, MessageKind], None] = {}
        self.recipients: dict[int, None] = {}  # pair indexes


class ShardedDecisions:
    def __init__(self, policy: PolicyService, owners: OwnerMap, peers: PartsPeer) -> None:
        if policy.sharded is None:
            raise ValueError("ShardedDecisions needs a PolicyService with shards")
        self._policy = policy
        self._sharded = policy.sharded
        self._owners = owners
        self._peers = peers

    async def decide(
        self, pairs: Sequence[tuple[str, str, MessageKind]], min_version: int, *, timeout: float
    ) -> tuple[list[Decision], int]:
        """The decisions for pairs (check_pairs' limits), at min_version or later; within
        timeout, else ShardNotServed naming a shard still undecided."""
        check_pairs(pairs)
        await self._policy.reach(min_version)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        sharded = self._sharded
        version = self._policy.position()
        crc, count, served = zlib.crc32, sharded.count, sharded.shards
        # each user's shard, once: (sender's, recipient's) per pair
        where = [(crc(s.encode()) % count, crc(r.encode()) % count) for s, r, _ in pairs]
        decisions: list[Decision | None] = []
        todo: list[int] = []
        for i, ((sender, recipient, kind), (ss, rs)) in enumerate(zip(pairs, where, strict=True)):
            sx, rx = served.get(ss), served.get(rs)
            if sx is None or rx is None:
                decisions.append(None)
                todo.append(i)
            elif sx is rx:
                decisions.append(sx.decide(sender, recipient, kind))
            else:
                decisions.append(
                    combine(
                        sender_part(sx, sender, kind), recipient_part(rx, sender, recipient, kind)
                    )
                )
        delay = RETRY_INITIAL
        while todo:
            todo, reached, waiting = await self._round(
                pairs, where, todo, decisions, min_version, deadline
            )
            version = min(version, reached)
            if not todo:
                break
            left = deadline - loop.time()
            if left <= 0:
                raise ShardNotServed.of(waiting, loading=False)
            if waiting in self._policy.loading_shards():
                # this replica owns it and is loading it: wait for the load, not a retry
                with contextlib.suppress(ShardNotServed):
                    await self._policy.wait_served({waiting}, timeout=left)
                continue
            await self._owners.refresh()
            await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))
            delay = min(delay * 2, RETRY_MAX)
        done = [d for d in decisions if d is not None]
        count_decisions(pairs, done)
        return done, version

    async def _round(
        self,
        pairs: Sequence[tuple[str, str, MessageKind]],
        where: Sequence[tuple[int, int]],
        todo: list[int],
        decisions: list[Decision | None],
        min_version: int,
        deadline: float,
    ) -> tuple[list[int], int, int]:
        """Ask every owner once for the sides of the pairs in todo; (the pairs still undecided,
        the lowest version answered, a shard that kept one undecided)."""
        sharded = self._sharded
        served = sharded.shards
        version = self._policy.position()
        sides: dict[tuple[str, MessageKind], Decision] = {}
        recipient_sides: dict[int, Decision] = {}
        plans: dict[str, _Plan] = {}
        unowned = -1
        for i in todo:
            sender, recipient, kind = pairs[i]
            ss, rs = where[i]
            if (sender, kind) not in sides:
                index = served.get(ss)
                if index is not None:
                    sides[sender, kind] = sender_part(index, sender, kind)
                else:
                    address = self._address(ss)
                    if address is None:
                        unowned = ss
                    else:
                        plans.setdefault(address, _Plan()).senders[sender, kind] = None
            index = served.get(rs)
            if index is not None:
                recipient_sides[i] = recipient_part(index, sender, recipient, kind)
            else:
                address = self._address(rs)
                if address is None:
                    unowned = rs
                else:
                    plans.setdefault(address, _Plan()).recipients[i] = None
        loop = asyncio.get_running_loop()
        asked = list(plans.items())
        answers = await asyncio.gather(
            *(
                self._peers.decide_parts(
                    address,
                    shard_count=sharded.count,
                    min_version=min_version,
                    senders=list(plan.senders),
                    recipients=[pairs[i] for i in plan.recipients],
                    timeout=max(0.001, deadline - loop.time()),
                )
                for address, plan in asked
            ),
            return_exceptions=True,
        )
        for (_, plan), answer in zip(asked, answers, strict=True):
            if isinstance(answer, BaseException):
                if isinstance(answer, asyncio.CancelledError):
                    raise answer
                continue
            sender_reasons, recipient_reasons, reached = answer
            version = min(version, reached)
            for key, reason in zip(plan.senders, sender_reasons, strict=True):
                sides[key] = DECISIONS[reason]
            for i, reason in zip(plan.recipients, recipient_reasons, strict=True):
                recipient_sides[i] = DECISIONS[reason]
        left = []
        waiting = unowned
        for i in todo:
            sender, recipient, kind = pairs[i]
            s_side, r_side = sides.get((sender, kind)), recipient_sides.get(i)
            if s_side is not None and (not s_side.allowed or r_side is not None):
                decisions[i] = combine(s_side, r_side) if r_side is not None else s_side
            else:
                left.append(i)
                if waiting < 0:
                    waiting = where[i][0] if s_side is None else where[i][1]
        return left, version, waiting

    def _address(self, shard: int) -> str | None:
        """The owner to ask for a shard not served here; None when nobody (or this replica,
        while it loads the shard) can answer now."""
        address = self._owners.owner_address(shard)
        if address is None or address == self._owners.address:
            return None
        return address


def check_pairs(pairs: Sequence[tuple[str, str, MessageKind]]) -> None:
    """INVALID_ARGUMENT for a batch over MAX_BATCH_PAIRS or the first malformed pair (named)."""
    if len(pairs) > MAX_BATCH_PAIRS:
        raise InvalidInput(
            f"pairs has {len(pairs)} entries: send at most {MAX_BATCH_PAIRS} per call"
        )
    for i, (sender, recipient, _) in enumerate(pairs):
        if not (
            0 < len(sender) <= USER_ID_MAX_LENGTH
            and 0 < len(recipient) <= USER_ID_MAX_LENGTH
            and sender.isprintable()
            and recipient.isprintable()
            and not sender.isspace()
            and not recipient.isspace()
        ):
            field = "" if len(pairs) == 1 else f"pairs[{i}]."
            validate_pair_user(sender, f"{field}sender_id")
            validate_pair_user(recipient, f"{field}recipient_id")
