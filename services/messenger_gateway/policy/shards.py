"""The delivery policy divided into shards by user: which shard a user is in, the shards' indexes,
and decisions whose two sides may sit in different shards.

A user's facts live in the shard of the user (shard_of): as a sender (identified, on which
number: rules 1 and 2) and as a recipient (known, rules, consents, unaccepted-sender policy: rules
3 to 6). Both sides are divided, so a replica holding half the shards holds half the index: the
sender side is one entry per user, as large as the recipient's "is this user known", and keeping
it on every replica would keep every user on every replica. Restriction orders in force are few
(a regulator's demands) and a phone-number order must meet the sender's number wherever the
sender is, so every shard's index holds them all.

Each shard has its own PolicyIndex, filled through its load(snapshot) and apply(change) only: the
store's snapshot and change-log entries are filtered here before they reach it. Rules 1-2 read
only the sender and rules 3-6 only the recipient (SENDER_REASONS; test_policy_shards.py checks
the split against decide on random indexes), so a decision is the sender's part if it refuses,
else the recipient's part, each read from the index of its own shard, here or at its owner.
The sides are written out for speed (sender_part, recipient_part) beside their readable
reference over RULES (sender_part_by_rules, recipient_part_by_rules), and tested to agree.
No grpc, no SQL.
"""

from __future__ import annotations

import sys
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta

from services.common.errors import DomainError
from services.messenger_gateway.policy.index import ALLOWED, PolicyIndex
from services.messenger_gateway.policy.model import (
    DECISIONS,
    RULES_BY_KIND,
    ChangeKind,
    Decision,
    DeliveryReason,
    MessageKind,
    PolicyChange,
    Rule,
    Snapshot,
)

MAX_SHARDS = 4096

# The rules that read only the sender; every other rule reads only the recipient's side.
SENDER_REASONS = frozenset({DeliveryReason.SENDER_NOT_IDENTIFIED, DeliveryReason.SENDER_RESTRICTED})
SENDER_RULES: dict[MessageKind, tuple[Rule, ...]] = {
    kind: tuple(r for r in rules if r.reason in SENDER_REASONS)
    for kind, rules in RULES_BY_KIND.items()
}
RECIPIENT_RULES: dict[MessageKind, tuple[Rule, ...]] = {
    kind: tuple(r for r in rules if r.reason not in SENDER_REASONS)
    for kind, rules in RULES_BY_KIND.items()
}


def shard_of(user_id: str, count: int) -> int:
    """The user's shard among `count`: CRC-32 of the id's UTF-8, modulo count. Stable across
    processes, hosts and versions (Python's hash() is salted per process)."""
    return zlib.crc32(user_id.encode()) % count


def validate_shard_count(count: int) -> int:
    if not 1 <= count <= MAX_SHARDS:
        raise ValueError(f"the shard count must be 1 to {MAX_SHARDS}, got {count}")
    return count


def sender_part_by_rules(index: PolicyIndex, sender: str, kind: MessageKind) -> Decision:
    """The reference: rules 1-2 (the sender's side) from the sender's shard, the first of
    RULES that refuses, or ALLOWED."""
    for rule in SENDER_RULES[kind]:
        if rule.refuses(index, sender, "", kind):
            return DECISIONS[rule.reason]
    return ALLOWED


def recipient_part_by_rules(
    index: PolicyIndex, sender: str, recipient: str, kind: MessageKind
) -> Decision:
    """The reference: rules 3-6 (the recipient's side) from the recipient's shard, the first of
    RULES that refuses, or ALLOWED."""
    for rule in RECIPIENT_RULES[kind]:
        if rule.refuses(index, sender, recipient, kind):
            return DECISIONS[rule.reason]
    return ALLOWED


def sender_part(index: PolicyIndex, sender: str, kind: MessageKind) -> Decision:
    """sender_part_by_rules written out (it runs for every forwarded pair): the same rules in
    the same order; test_policy_shards.py checks that the two agree on random indexes."""
    if not index.is_identified(sender):
        return _NOT_IDENTIFIED
    if index.is_restricted(sender, kind):
        return _RESTRICTED
    return ALLOWED


def recipient_part(index: PolicyIndex, sender: str, recipient: str, kind: MessageKind) -> Decision:
    """recipient_part_by_rules written out, as sender_part."""
    if not index.is_known(recipient):
        return _UNKNOWN
    if kind is MessageKind.STATE_MAILING:
        return ALLOWED
    if index.refused(recipient, sender):
        return _REFUSED
    if kind is MessageKind.AUTOMATED:
        return ALLOWED if index.consented(recipient, sender) else _NO_CONSENT
    if not index.accepted(recipient, sender) and index.refuses_unaccepted(recipient):
        return _NOT_ACCEPTED
    return ALLOWED


_NOT_IDENTIFIED = DECISIONS[DeliveryReason.SENDER_NOT_IDENTIFIED]
_RESTRICTED = DECISIONS[DeliveryReason.SENDER_RESTRICTED]
_UNKNOWN = DECISIONS[DeliveryReason.RECIPIENT_UNKNOWN]
_REFUSED = DECISIONS[DeliveryReason.RECIPIENT_REFUSED_SENDER]
_NO_CONSENT = DECISIONS[DeliveryReason.NO_AUTOMATED_CONSENT]
_NOT_ACCEPTED = DECISIONS[DeliveryReason.SENDER_NOT_ACCEPTED]


def combine(sender: Decision, recipient: Decision) -> Decision:
    """The decision from its two parts: the sender's rules come first."""
    return sender if not sender.allowed else recipient


@dataclass(frozen=True, slots=True)
class ShardLoad:
    """What a shard's index was loaded with: the rows of the snapshot that fell in it."""

    version: int
    users: int
    entries: int  # users, sender rules, unaccepted-sender policies and consents


@dataclass(frozen=True, slots=True)
class LoadedShard:
    """A shard's index, loaded and not yet served."""

    index: PolicyIndex
    load: ShardLoad


class ShardedIndex:
    """The indexes of the shards this replica serves, each at the version of the whole.

    `version` is the change-log version every served shard reflects. A shard joins by install()
    with an index loaded from a snapshot at version v and caught up (by the caller, through
    apply_to) to `version`; apply() brings every served shard along, each change to the shards
    it concerns. Synchronous throughout, as PolicyIndex: a decision sees one version."""

    def __init__(self, count: int, *, refuse_unaccepted_by_default: bool = False) -> None:
        self.count = validate_shard_count(count)
        self.refuse_unaccepted_by_default = refuse_unaccepted_by_default
        self.version = 0
        self.shards: dict[int, PolicyIndex] = {}
        self.loads: dict[int, ShardLoad] = {}

    # --- building ----------------------------------------------------------------------------

    def new_index(self) -> PolicyIndex:
        return PolicyIndex(refuse_unaccepted_by_default=self.refuse_unaccepted_by_default)

    def load(self, snapshot: Snapshot, shards: Iterable[int]) -> dict[int, LoadedShard]:
        """Indexes for `shards` from one pass over the snapshot (not installed), each holding
        only the rows of its users, and every order in force. Reads nothing of this object
        but its settings: it runs off the event loop."""
        wanted = sorted(set(shards))
        count = self.count
        for shard in wanted:
            if not 0 <= shard < count:
                raise ValueError(f"shard {shard} is not in 0..{count - 1}")
        parts = {s: _Rows() for s in wanted}
        crc = zlib.crc32
        # The rows kept until each shard's index is built hold only what the index may keep:
        # columns of the strings (no tuple per row), the few values of a state, rule or policy
        # shared (sys.intern), so a replica's memory at the load is about its share's.
        intern = sys.intern
        for user_id, phone, state in snapshot.users:
            part = parts.get(crc(user_id.encode()) % count)
            if part is not None:
                part.user_ids.append(user_id)
                part.phones.append(phone)
                part.states.append(intern(state))
        for recipient, sender, rule in snapshot.sender_rules:
            part = parts.get(crc(recipient.encode()) % count)
            if part is not None:
                part.rule_recipients.append(recipient)
                part.rule_senders.append(sender)
                part.rules.append(intern(rule))
        for user_id, policy in snapshot.unaccepted:
            part = parts.get(crc(user_id.encode()) % count)
            if part is not None:
                part.policy_users.append(user_id)
                part.policies.append(intern(policy))
        for recipient, sender in snapshot.consents:
            part = parts.get(crc(recipient.encode()) % count)
            if part is not None:
                part.consent_recipients.append(recipient)
                part.consent_senders.append(sender)
        orders = list(snapshot.orders)
        loaded: dict[int, LoadedShard] = {}
        for shard in wanted:
            part = parts.pop(shard)  # its rows freed once its index is built
            index = self.new_index()
            index.load(
                Snapshot(
                    version=snapshot.version,
                    users=zip(part.user_ids, part.phones, part.states, strict=True),
                    sender_rules=zip(
                        part.rule_recipients, part.rule_senders, part.rules, strict=True
                    ),
                    unaccepted=zip(part.policy_users, part.policies, strict=True),
                    consents=zip(part.consent_recipients, part.consent_senders, strict=True),
                    orders=orders,
                )
            )
            entries = index.users + len(part.rules) + len(part.policies) + len(part.consent_senders)
            loaded[shard] = LoadedShard(index, ShardLoad(snapshot.version, index.users, entries))
        return loaded

    def install(self, loaded: Mapping[int, LoadedShard], version: int) -> None:
        """Serve these shards, loaded and caught up (apply_to) to `version`, which must be this
        index's version: a shard is served only once it is as current as the others."""
        if version != self.version:
            raise ValueError(
                f"shards caught up to version {version}, the index is at {self.version}"
            )
        for shard, part in loaded.items():
            self.shards[shard] = part.index
            self.loads[shard] = part.load

    def drop(self, shards: Iterable[int]) -> None:
        for shard in shards:
            self.shards.pop(shard, None)
            self.loads.pop(shard, None)

    def apply(self, change: PolicyChange) -> None:
        """Apply the next change-log entry to the served shards it concerns."""
        apply_to(self.shards, change, self.count)
        self.version = change.version

    # --- reading -----------------------------------------------------------------------------

    def serves(self, shard: int) -> bool:
        return shard in self.shards

    def shard(self, user_id: str) -> int:
        return shard_of(user_id, self.count)

    def index_of(self, user_id: str) -> PolicyIndex | None:
        """The index of the user's shard, None if this replica does not serve it."""
        return self.shards.get(shard_of(user_id, self.count))

    @property
    def users(self) -> int:
        return sum(ix.users for ix in self.shards.values())

    @property
    def entries(self) -> int:
        """Index entries loaded into the served shards (users, rules, policies, consents)."""
        return sum(self.loads[s].entries for s in self.shards if s in self.loads)

    @property
    def orders_in_force(self) -> int:
        return next(iter(self.shards.values())).orders_in_force if self.shards else 0

    def decide(self, sender: str, recipient: str, kind: MessageKind) -> Decision | None:
        """The decision, when both users' shards are served here; None otherwise."""
        count = self.count
        sx = self.shards.get(zlib.crc32(sender.encode()) % count)
        rx = self.shards.get(zlib.crc32(recipient.encode()) % count)
        if sx is None or rx is None:
            return None
        if sx is rx:
            return sx.decide(sender, recipient, kind)
        return combine(sender_part(sx, sender, kind), recipient_part(rx, sender, recipient, kind))


def apply_to(indexes: Mapping[int, PolicyIndex], change: PolicyChange, count: int) -> None:
    """Apply a change to those of `indexes` (shard -> index) it concerns."""
    if change.kind is ChangeKind.RESTRICTION_ORDER:
        for index in indexes.values():
            index.apply(change)
        return
    target = indexes.get(shard_of(change.user_id, count))
    if target is not None:
        target.apply(change)


class _Rows:
    """A shard's rows of a snapshot, in columns."""

    __slots__ = (
        "consent_recipients",
        "consent_senders",
        "phones",
        "policies",
        "policy_users",
        "rule_recipients",
        "rule_senders",
        "rules",
        "states",
        "user_ids",
    )

    def __init__(self) -> None:
        self.user_ids: list[str] = []
        self.phones: list[str] = []
        self.states: list[str] = []
        self.rule_recipients: list[str] = []
        self.rule_senders: list[str] = []
        self.rules: list[str] = []
        self.policy_users: list[str] = []
        self.policies: list[str] = []
        self.consent_recipients: list[str] = []
        self.consent_senders: list[str] = []


class ShardNotServed(DomainError):
    """This replica does not serve the shard (UNAVAILABLE): it is another's, or its index is
    still loading; metadata "shard". A forwarding replica asks the owner again."""

    REASON = "POLICY_SHARD_NOT_SERVED"

    @classmethod
    def of(cls, shard: int, *, loading: bool) -> ShardNotServed:
        why = "its index is still loading" if loading else "this replica does not own it"
        return cls(
            f"policy shard {shard} is not served here: {why}; ask again shortly",
            retry_after=timedelta(milliseconds=200),
            metadata={"shard": shard, "loading": str(loading).lower()},
        )
