"""The delivery policy's use cases: preferences, restriction orders, decisions, the change stream.

Decisions are read from the in-memory PolicyIndex. It is kept coherent with the store, which is
the truth:
- at start it loads a snapshot (one read transaction) and applies the change log after it;
- each write here commits (table row + change-log entry in one transaction) and then applies the
  log before acknowledging, so the next decision on this process sees it;
- identification changes reach the log through triggers; the identification paths of this
  process tell identification_changed() the entries their transaction logged, versions
  included, and it applies them in version order without a read (entries that arrive ahead of
  a missing version wait for it, at most PENDING_MAX); only when the user's answer would still
  be stale (the missing version is another process's) does it catch up, so the change applies
  from the next decision here too; a batch of notices that revoked any catches up;
- the tailer (run_tail) applies what other processes on the same database wrote (replicas): on
  PostgreSQL as soon as the store signals a commit (LISTEN/NOTIFY), and on either engine every
  `poll_interval` (on SQLite the only signal; on PostgreSQL the safety net for a lost
  notification), so another replica's change applies there within that interval at worst;
- a log pruned past the index's version (a replica stopped for longer than the retention)
  triggers a reload from a new snapshot.

With `shards` set (policy/shards.py) the process holds only the shards it serves: each one is
loaded from a filtered snapshot when the replica takes its lease (add_shards), caught up to the
version of the others and only then served; the tail applies each change to the served shards it
concerns. The whole index's version, min_version and the change stream keep their meaning: the
version is the store's change-log version, common to every shard.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter as Tally
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from prometheus_client import Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from services.common.availability import log_failure
from services.common.errors import InvalidInput
from services.common.logging import get_logger
from services.common.phone import mask, parse_mobile
from services.common.timeutil import Clock, SystemClock
from services.messenger_gateway.identification.model import (
    USER_ID_MAX_LENGTH,
    Identification,
    State,
    validate_user_id,
)
from services.messenger_gateway.policy.index import PolicyIndex
from services.messenger_gateway.policy.model import (
    MAX_BATCH_PAIRS,
    ORDER_LIMIT,
    AutomatedConsent,
    ChangesPruned,
    Consent,
    Decision,
    DeliveryReason,
    MessageKind,
    OrderAuditRecord,
    OrderEvent,
    OrderScope,
    OrderState,
    OrderTarget,
    PolicyChange,
    Preferences,
    RestrictionOrder,
    SenderRule,
    UnacceptedPolicy,
    UserUnknown,
    VersionAhead,
    validate_lift_reason,
    validate_order_id,
    validate_pair_user,
    validate_received_at,
    validate_sender_id,
)
from services.messenger_gateway.policy.ports import PolicyStore
from services.messenger_gateway.policy.shard_serving import ShardServing
from services.messenger_gateway.policy.shards import ShardedIndex

log = get_logger("idmesh.gateway.policy")

CATCH_UP_PAGE = 5_000
PENDING_MAX = 10_000  # told entries kept ahead of a missing version; beyond, the tailer brings them
WATCH_PAGE = 500
MAX_LIST = 1_000

DECISIONS = Counter(
    "idmesh_gateway_delivery_decisions",
    "Delivery decisions (CheckDelivery and each pair of CheckDeliveryBatch), by message kind "
    "and reason (allowed, or the rule that refused).",
    ["kind", "reason"],
)
PREFERENCE_CHANGES = Counter(
    "idmesh_gateway_policy_preference_changes",
    "Preference changes stored, by kind (sender_rule, unaccepted_policy, automated_consent).",
    ["kind"],
)
_PREFERENCE_CHANGED = {
    kind: PREFERENCE_CHANGES.labels(kind=kind)
    for kind in ("sender_rule", "unaccepted_policy", "automated_consent")
}
ORDERS_RECEIVED = Counter(
    "idmesh_gateway_restriction_orders_received",
    "Restriction orders recorded (a repeated RecordRestrictionOrder of the same order is not "
    "counted again).",
)
INDEX_RELOADS = Counter(
    "idmesh_gateway_policy_index_reloads",
    "Full reloads of the policy index from a store snapshot (the start, and a change log "
    "pruned past the index's version).",
)
_DECISION_CHILDREN = {
    (kind, reason): DECISIONS.labels(kind=kind.value.lower(), reason=reason.value.lower())
    for kind in MessageKind
    for reason in DeliveryReason
}


@dataclass(frozen=True, slots=True)
class PolicySettings:
    unaccepted_default: UnacceptedPolicy = UnacceptedPolicy.ALLOW
    poll_interval: float = 0.25  # other processes' changes applied at least this often
    change_retention: timedelta = timedelta(days=7)  # how far back WatchPolicyChanges resumes
    progress_interval: float = 10.0  # an idle change stream's progress marks
    shards: int = 0  # 0: the whole index here; N: N shards, this process serving those it owns


@dataclass(frozen=True, slots=True)
class WatchItem:
    """One message of the change stream: changes in version order, or a progress mark (no
    changes) saying the stream is current up to head_version."""

    changes: tuple[PolicyChange, ...]
    head_version: int


class PolicyService(ShardServing):
    def __init__(
        self, settings: PolicySettings, *, store: PolicyStore, clock: Clock | None = None
    ) -> None:
        if settings.unaccepted_default is UnacceptedPolicy.DEFAULT:
            raise ValueError("unaccepted_default must be ALLOW or REFUSE")
        self.settings = settings
        self._store = store
        self._clock = clock or SystemClock()
        self.index = PolicyIndex(
            refuse_unaccepted_by_default=settings.unaccepted_default is UnacceptedPolicy.REFUSE
        )
        self.sharded: ShardedIndex | None = None
        if settings.shards:
            self.sharded = ShardedIndex(
                settings.shards,
                refuse_unaccepted_by_default=self.index.refuse_unaccepted_by_default,
            )
        self._loading: set[int] = set()  # shards owned here, their index not yet served
        self._installed = asyncio.Event()  # replaced each time shards are installed
        self._lock = asyncio.Lock()
        self._advanced = asyncio.Event()  # replaced each time the index advances
        # entries told by identification writes, ahead of the index's next version
        self._pending: dict[int, PolicyChange] = {}

    # --- coherence -----------------------------------------------------------------------------

    async def start(self) -> None:
        if self.sharded is not None:
            # no shard yet (the ownership keeper adds them): follow the log from its head
            _, self.sharded.version = await self._store.log_bounds()
            log.info("policy.sharded", shards=self.sharded.count, version=self.sharded.version)
            return
        async with self._lock:
            await self._reload()
            await self._catch_up()
        log.info(
            "policy.index_loaded",
            version=self.index.version,
            users=self.index.users,
            orders_in_force=self.index.orders_in_force,
        )

    async def catch_up(self) -> int:
        """Apply the change log after the index's version; returns the version reached."""
        async with self._lock:
            await self._catch_up()
        return self.position()

    async def _reload(self) -> None:
        # built aside and swapped in one step: no decision sees half an index
        sharded = self.sharded
        if sharded is not None:
            loaded, version = await self._store.read_snapshot(
                lambda snapshot: (sharded.load(snapshot, list(sharded.shards)), snapshot.version)
            )
            sharded.drop(list(sharded.shards))
            sharded.version = version
            sharded.install(loaded, version)
        else:
            self.index = await self._store.load_index(
                refuse_unaccepted_by_default=self.index.refuse_unaccepted_by_default
            )
        INDEX_RELOADS.inc()
        self._wake()

    async def _catch_up(self) -> None:
        live: PolicyIndex | ShardedIndex = self.sharded or self.index
        before = live.version
        while True:
            live = self.sharded or self.index
            changes = await self._store.changes_after(live.version, CATCH_UP_PAGE)
            if not changes:
                break
            if changes[0].version != live.version + 1:
                log.warning(
                    "policy.log_pruned_past_index",
                    index_version=live.version,
                    oldest_kept=changes[0].version,
                )
                await self._reload()
                continue
            for change in changes:  # synchronous: a decision sees whole pages only
                live.apply(change)
            if len(changes) < CATCH_UP_PAGE:
                break
        self._apply_pending()
        if (self.sharded or self.index).version != before:
            self._wake()

    async def run_tail(self) -> None:
        """Keep the index current with other processes' writes until cancelled: catch up when
        the store signals a commit elsewhere, and every poll_interval in any case."""
        signalled = asyncio.Event()
        async with self._store.changes_signalled(signalled.set):
            while True:
                signalled.clear()  # a signal from here on means another round
                try:
                    await self.catch_up()
                except Exception as exc:
                    log_failure(log, "policy.catch_up_failed", exc)
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.settings.poll_interval):
                        await signalled.wait()

    def _wake(self) -> None:
        advanced, self._advanced = self._advanced, asyncio.Event()
        advanced.set()

    def position(self) -> int:
        """The change-log version the index (or the shards served here) has applied."""
        return self.sharded.version if self.sharded is not None else self.index.version

    async def identification_changed(
        self, ident: Identification, changes: Sequence[PolicyChange] | None
    ) -> None:
        """An identification write committed `ident`, logging `changes` (with their versions).
        They apply in version order, at once when they follow on the index; else they wait for
        the versions before them (another write of this process resumes in a moment, or the
        tailer brings another process's), and the index catches up now only if its answer for
        the user (known, identified, on which number) is still stale."""
        if changes:
            async with self._lock:
                live = self.sharded or self.index
                for change in changes:
                    if change.version > live.version and len(self._pending) < PENDING_MAX:
                        self._pending[change.version] = change
                self._apply_pending()
        identified = ident.state is State.IDENTIFIED
        index = self.index
        if self.sharded is not None:
            served = self.sharded.index_of(ident.user_id)
            if served is None:
                return  # another replica's shard: the tail brings the version along
            index = served
        if (
            index.is_known(ident.user_id)
            and index.is_identified(ident.user_id) == identified
            and (not identified or index.identified_number(ident.user_id) == ident.phone_number)
        ):
            return
        await self.catch_up()

    def _apply_pending(self) -> None:
        """Apply the told entries that follow on the index (synchronously: a decision sees
        whole writes); drop those the index has passed."""
        pending = self._pending
        if not pending:
            return
        live = self.sharded or self.index
        before = live.version
        while (change := pending.pop(live.version + 1, None)) is not None:
            live.apply(change)
        if pending:
            for version in [v for v in pending if v <= live.version]:
                del pending[version]
        if live.version != before:
            self._wake()

    async def prune_changes(self) -> int:
        pruned = await self._store.prune_changes(self._clock.now() - self.settings.change_retention)
        if pruned:
            log.info("policy.changes_pruned", count=pruned)
        return pruned

    # --- decisions -------------------------------------------------------------------------

    async def reach(self, min_version: int) -> None:
        """Make sure decisions are made at min_version or later: catch up from the store if
        the index is behind it (read-your-writes across replicas). Free when it is not."""
        if min_version <= self.position():
            return
        await self.catch_up()
        if min_version > self.position():
            oldest, head = await self._store.log_bounds()
            raise VersionAhead(
                f"min_version {min_version} is beyond the policy log's head {head}: pass a "
                "version a Set* call or a change returned",
                metadata={"oldest_version": oldest, "head_version": head},
            )

    def check_delivery(
        self, sender_id: str, recipient_id: str, kind: MessageKind
    ) -> tuple[Decision, int]:
        """The decision and the index version it was made at (the whole index: with shards,
        decisions go through ShardedDecisions, policy/forwarding.py)."""
        if self.sharded is not None:
            raise RuntimeError("with shards, decide through ShardedDecisions")
        validate_pair_user(sender_id, "sender_id")
        validate_pair_user(recipient_id, "recipient_id")
        decision = self.index.decide(sender_id, recipient_id, kind)
        _DECISION_CHILDREN[kind, decision.reason].inc()
        return decision, self.index.version

    def check_delivery_batch(
        self, pairs: Sequence[tuple[str, str, MessageKind]]
    ) -> tuple[list[Decision], int]:
        """Decisions for up to MAX_BATCH_PAIRS (sender, recipient, kind), all at one version.
        One invalid pair refuses the whole batch (INVALID_ARGUMENT naming it)."""
        if self.sharded is not None:
            raise RuntimeError("with shards, decide through ShardedDecisions")
        if len(pairs) > MAX_BATCH_PAIRS:
            raise InvalidInput(
                f"pairs has {len(pairs)} entries: send at most {MAX_BATCH_PAIRS} per call"
            )
        for i, (sender, recipient, _) in enumerate(pairs):
            if (
                0 < len(sender) <= USER_ID_MAX_LENGTH
                and 0 < len(recipient) <= USER_ID_MAX_LENGTH
                and sender.isprintable()
                and recipient.isprintable()
                and not sender.isspace()
                and not recipient.isspace()
            ):
                continue
            # the first bad pair: say which and why
            validate_pair_user(sender, f"pairs[{i}].sender_id")
            validate_pair_user(recipient, f"pairs[{i}].recipient_id")
        decisions = self.index.decide_batch(pairs)  # over the index's arrays, all at once
        count_decisions(pairs, decisions)
        return decisions, self.index.version

    # --- preferences -----------------------------------------------------------------------

    async def set_sender_rule(self, user_id: str, sender_id: str, rule: SenderRule) -> int:
        validate_user_id(user_id)
        validate_sender_id(sender_id)
        if sender_id == user_id:
            raise InvalidInput("sender_id is the user themself: name another user")
        version = await self._store.set_sender_rule(user_id, sender_id, rule, self._clock.now())
        await self.catch_up()
        _PREFERENCE_CHANGED["sender_rule"].inc()
        log.info("policy.sender_rule_set", user_id=user_id, sender_id=sender_id, rule=rule)
        return version

    async def set_unaccepted_policy(self, user_id: str, policy: UnacceptedPolicy) -> int:
        validate_user_id(user_id)
        version = await self._store.set_unaccepted_policy(user_id, policy, self._clock.now())
        await self.catch_up()
        _PREFERENCE_CHANGED["unaccepted_policy"].inc()
        log.info("policy.unaccepted_policy_set", user_id=user_id, policy=policy)
        return version

    async def set_automated_consent(
        self, user_id: str, sender_id: str, consent: Consent
    ) -> tuple[AutomatedConsent, int]:
        validate_user_id(user_id)
        validate_sender_id(sender_id)
        result = await self._store.set_automated_consent(
            user_id, sender_id, consent, self._clock.now()
        )
        await self.catch_up()
        _PREFERENCE_CHANGED["automated_consent"].inc()
        log.info(
            "policy.automated_consent_set", user_id=user_id, sender_id=sender_id, consent=consent
        )
        return result

    async def preferences(self, user_id: str) -> Preferences:
        validate_user_id(user_id)
        prefs = await self._store.preferences(user_id, self.settings.unaccepted_default)
        if prefs is None:
            raise UserUnknown.of(user_id)
        return prefs

    # --- restriction orders ----------------------------------------------------------------

    async def record_order(
        self,
        *,
        order_id: str,
        user_id: str,
        phone_number: str,
        scope: OrderScope,
        received_at: datetime | None,
        hold: bool,
        actor: str,
    ) -> tuple[RestrictionOrder, bool]:
        """Record a regulator's order, in force at once unless held (RECEIVED, for review).
        Returns (the order, created): the same order again changes nothing."""
        validate_order_id(order_id)
        now = self._clock.now()
        received = validate_received_at(received_at, now)
        if bool(user_id) == bool(phone_number):
            raise InvalidInput("give exactly one target: user_id or phone_number")
        if user_id:
            target, value = OrderTarget.USER, validate_user_id(user_id)
        else:
            target, value = OrderTarget.PHONE, parse_mobile(phone_number)
        order = RestrictionOrder(
            order_id=order_id,
            target=target,
            target_value=value,
            scope=scope,
            state=OrderState.RECEIVED if hold else OrderState.IN_FORCE,
            received_at=received,
            recorded_at=now,
            in_force_at=None if hold else now,
        )
        stored, created = await self._store.record_order(order, actor=actor, now=now)
        await self.catch_up()
        if created:
            ORDERS_RECEIVED.inc()
            self._log_order("restriction_order.recorded", stored, actor)
        return stored, created

    async def enforce_order(self, order_id: str, *, actor: str) -> RestrictionOrder:
        validate_order_id(order_id)
        order = await self._store.change_order(
            order_id, OrderEvent.ENFORCE, actor=actor, now=self._clock.now()
        )
        await self.catch_up()
        self._log_order("restriction_order.enforced", order, actor)
        return order

    async def lift_order(self, order_id: str, reason: str, *, actor: str) -> RestrictionOrder:
        validate_order_id(order_id)
        validate_lift_reason(reason)
        order = await self._store.change_order(
            order_id, OrderEvent.LIFT, actor=actor, now=self._clock.now(), note=reason
        )
        await self.catch_up()
        self._log_order("restriction_order.lifted", order, actor)
        return order

    def _log_order(self, event: str, order: RestrictionOrder, actor: str) -> None:
        target = (
            mask(order.target_value) if order.target is OrderTarget.PHONE else order.target_value
        )
        delay = None
        if order.in_force_at is not None:
            delay = round((order.in_force_at - order.received_at).total_seconds(), 3)
        log.info(
            event,
            order_id=order.order_id,
            target=order.target,
            target_value=target,
            scope=order.scope,
            state=order.state,
            actor=actor,
            seconds_from_receipt_to_force=delay,
            late=delay is not None and delay > ORDER_LIMIT.total_seconds(),
        )

    async def list_orders(self, state: OrderState | None, limit: int) -> list[RestrictionOrder]:
        return await self._store.orders(state, _limit(limit))

    async def order_audit(self, order_id: str, limit: int) -> list[OrderAuditRecord]:
        if order_id:
            validate_order_id(order_id)
        return await self._store.order_audit(order_id or None, _limit(limit))

    # --- the change stream -----------------------------------------------------------------

    async def watch(self, after_version: int) -> AsyncGenerator[WatchItem, None]:
        """The change log after after_version, then its changes as they come (from any replica:
        read from the store, woken by this process's tailer); a progress mark first and every
        progress_interval while idle. OUT_OF_RANGE (ChangesPruned) once the log no longer
        reaches back to after_version."""
        if after_version < 0:
            raise InvalidInput("after_version must be 0 or more")
        oldest, head = await self._store.log_bounds()
        if oldest and after_version < oldest - 1:
            raise ChangesPruned(
                _pruned_message(after_version, oldest),
                metadata={"oldest_version": oldest, "head_version": head},
            )
        yield WatchItem((), self.position())
        cursor = after_version
        while True:
            advanced = self._advanced  # before reading: a change after the read wakes us
            changes = await self._store.changes_after(cursor, WATCH_PAGE)
            if changes:
                if changes[0].version != cursor + 1:
                    raise ChangesPruned(
                        _pruned_message(cursor, changes[0].version),
                        metadata={
                            "oldest_version": changes[0].version,
                            "head_version": self.position(),
                        },
                    )
                cursor = changes[-1].version
                yield WatchItem(tuple(changes), max(cursor, self.position()))
                continue
            try:
                async with asyncio.timeout(self.settings.progress_interval):
                    await advanced.wait()
            except TimeoutError:
                yield WatchItem((), max(cursor, self.position()))

    # --- metrics ---------------------------------------------------------------------------

    async def policy_metrics(self) -> list[Metric]:
        sla = await self._store.order_sla()
        _, head = await self._store.log_bounds()
        oldest_age = 0.0
        if sla.oldest_received_at is not None:
            oldest_age = max(0.0, (self._clock.now() - sla.oldest_received_at).total_seconds())
        orders = GaugeMetricFamily(
            "idmesh_gateway_restriction_orders",
            "Restriction orders by state: received (held, not yet in force) and in_force.",
            labels=["state"],
        )
        orders.add_metric(["received"], sla.received)
        orders.add_metric(["in_force"], sla.in_force)
        late = CounterMetricFamily(
            "idmesh_gateway_restriction_orders_late",
            "Restriction orders put in force more than the limit after their receipt (stored: "
            "survives restarts).",
            value=sla.late,
        )
        return [
            orders,
            GaugeMetricFamily(
                "idmesh_gateway_oldest_received_restriction_order_age_seconds",
                "Age (since receipt) of the oldest restriction order received but not yet in "
                "force, 0 when none; the limit is idmesh_gateway_restriction_order_limit_seconds.",
                value=oldest_age,
            ),
            GaugeMetricFamily(
                "idmesh_gateway_restriction_order_limit_seconds",
                "The legal limit from an order's receipt to its execution (24 hours).",
                value=ORDER_LIMIT.total_seconds(),
            ),
            late,
            GaugeMetricFamily(
                "idmesh_gateway_policy_index_version",
                "The change-log version this process's decisions are made at.",
                value=self.position(),
            ),
            GaugeMetricFamily(
                "idmesh_gateway_policy_log_head",
                "The change log's head version in the store (minus the index version: the lag).",
                value=head,
            ),
            GaugeMetricFamily(
                "idmesh_gateway_policy_index_users",
                "Users in the policy index (every user with an identification).",
                value=self.sharded.users if self.sharded is not None else self.index.users,
            ),
            *self._shard_metrics(),
        ]


def count_decisions(
    pairs: Sequence[tuple[str, str, MessageKind]], decisions: list[Decision]
) -> None:
    """The decisions metric, by kind and reason."""
    tally = Tally(zip([k for _, _, k in pairs], decisions, strict=True))
    for (kind, decision), count in tally.items():
        _DECISION_CHILDREN[kind, decision.reason].inc(count)


def _limit(limit: int) -> int:
    if limit < 0 or limit > MAX_LIST:
        raise InvalidInput(f"limit must be 0 (the default, 100) to {MAX_LIST}")
    return limit or 100


def _pruned_message(after: int, oldest: int) -> str:
    return (
        f"the policy change log starts at version {oldest}: after_version {after} was pruned; "
        "rebuild the cache (ListPreferences, ListRestrictionOrders) and watch from the "
        "version of the first message"
    )
