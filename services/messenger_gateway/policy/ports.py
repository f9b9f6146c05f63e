"""The delivery policy's store port: what the policy's use cases need from a store, whatever
the engine (adapters.policy_store.SqlitePolicyStore, adapters.policy_store_pg.PgPolicyStore)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Protocol, TypeVar

from services.messenger_gateway.policy.index import PolicyIndex
from services.messenger_gateway.policy.model import (
    AutomatedConsent,
    Consent,
    OrderAuditRecord,
    OrderEvent,
    OrderSla,
    OrderState,
    PolicyChange,
    Preferences,
    RestrictionOrder,
    SenderRule,
    Snapshot,
    UnacceptedPolicy,
)

T = TypeVar("T")

# Called when another process (a replica) may have committed policy changes.
ChangeSignal = Callable[[], None]


class PolicyStore(Protocol):
    """Preferences, restriction orders (audited), and the change log that readers follow.

    Every write is one transaction that changes its table and appends its change-log entry;
    identification changes are logged by the store itself, whichever path made them. Versions
    are gap-free and in commit order whichever replica writes: a reader that has seen version
    v and reads the changes after v never skips one that commits later."""

    # --- preferences (each write: UserUnknown for a user without an identification) ---------

    async def set_sender_rule(
        self, recipient: str, sender: str, rule: SenderRule, now: datetime
    ) -> int:
        """Store the rule (NONE deletes it); the change's version."""
        ...

    async def set_unaccepted_policy(
        self, user_id: str, policy: UnacceptedPolicy, now: datetime
    ) -> int: ...

    async def set_automated_consent(
        self, recipient: str, sender: str, consent: Consent, now: datetime
    ) -> tuple[AutomatedConsent, int]:
        """Grant (granted_at now) or revoke (revoked_at now); the other time is kept."""
        ...

    async def preferences(self, user_id: str, default: UnacceptedPolicy) -> Preferences | None:
        """The user's preferences; None if the user is unknown."""
        ...

    # --- restriction orders ------------------------------------------------------------------

    async def record_order(
        self, order: RestrictionOrder, *, actor: str, now: datetime
    ) -> tuple[RestrictionOrder, bool]:
        """Insert the order with its audit record and change; (stored order, created). The same
        order again returns the stored one; another under the same id is OrderConflict."""
        ...

    async def change_order(
        self, order_id: str, event: OrderEvent, *, actor: str, now: datetime, note: str = ""
    ) -> RestrictionOrder:
        """ENFORCE or LIFT by the order state machine, audited and logged."""
        ...

    async def orders(self, state: OrderState | None, limit: int) -> list[RestrictionOrder]:
        """Newest first."""
        ...

    async def order_audit(self, order_id: str | None, limit: int) -> list[OrderAuditRecord]:
        """Oldest first; the records are append-only."""
        ...

    async def order_sla(self) -> OrderSla: ...

    # --- the change log ----------------------------------------------------------------------

    async def changes_after(self, version: int, limit: int) -> list[PolicyChange]: ...

    async def log_bounds(self) -> tuple[int, int]:
        """(the oldest version kept, the head version); (0, 0) when the log is empty."""
        ...

    async def prune_changes(self, before: datetime) -> int:
        """Delete entries older than `before`, always keeping the head."""
        ...

    async def load_index(self, *, refuse_unaccepted_by_default: bool) -> PolicyIndex:
        """A new index built from the whole store at one version (one snapshot)."""
        ...

    async def read_snapshot(self, build: Callable[[Snapshot], T]) -> T:
        """build(the whole store at one version), run off the event loop: a sharded replica
        builds the indexes of some shards from it (policy/shards.py)."""
        ...

    def changes_signalled(self, wake: ChangeSignal) -> AbstractAsyncContextManager[None]:
        """While the block runs, call wake() when another process commits changes; a no-op
        where only the poll can tell."""
        ...
