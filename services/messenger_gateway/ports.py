"""The gateway's store ports: what the service layer needs from a store, whatever the engine.

GatewayStore (identifications, notices, ported numbers, leases): store.SqliteGatewayStore and
store_pg.PgGatewayStore. PolicyStore (the delivery policy): policy_store.SqlitePolicyStore and
policy_store_pg.PgPolicyStore. The PostgreSQL adapters serve several replicas on one database;
both pairs pass the same tests (parametrised by engine).

Each method of GatewayStore that writes is one transaction, and its guard (the state an
identification must still be in, the request id it must still be verifying under, its window)
is part of the write, so that the first of two racing writers wins and the other changes
nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Protocol

from services.common.lease import Lease, LeaseStore
from services.messenger_gateway.domain import (
    Identification,
    NoticeResult,
    PortedNumber,
    Reason,
    State,
    TerminationNotice,
)
from services.messenger_gateway.policy import (
    AutomatedConsent,
    Consent,
    OrderAuditRecord,
    OrderEvent,
    OrderSla,
    OrderState,
    PolicyChange,
    PolicyIndex,
    Preferences,
    RestrictionOrder,
    SenderRule,
    UnacceptedPolicy,
)

# Called when another process (a replica) may have committed policy changes.
ChangeSignal = Callable[[], None]


class GatewayStore(LeaseStore, Protocol):
    """Named leases (acquire_lease, release_lease, lease_of: LeaseStore) hold the notice
    consumer; pending verifications carry a lease of their own (begin_verification,
    claim_verifications, renew_verifications, release_verifications)."""

    # --- reads --------------------------------------------------------------------------------

    async def get(self, identification_id: str) -> Identification | None: ...

    async def current(self, user_id: str) -> Identification | None:
        """The user's latest identification."""
        ...

    async def history(self, user_id: str) -> list[Identification]: ...

    async def verifying_summary(self) -> tuple[int, datetime | None]:
        """(identifications VERIFYING, the earliest verification deadline among them)."""
        ...

    async def notice_cursor(self, messenger_id: str) -> int: ...

    async def inbox_has(self, event_id: str) -> bool: ...

    async def ported_number(self, phone_number: str) -> PortedNumber | None: ...

    async def by_idempotency_key(self, user_id: str, key: str) -> Identification | None:
        """The identification the user started with this idempotency key, if any."""
        ...

    # --- identification transitions -------------------------------------------------------------

    async def replace_current(
        self,
        new: Identification,
        *,
        now: datetime,
        change_number: bool,
        idempotency_key: str | None = None,
    ) -> Identification | None:
        """Insert `new` as the user's current identification, ending the previous one, in one
        transaction; the previous one as it is afterwards, or None. With an idempotency key
        the user already started an identification with: nothing changes, IdempotentReplay."""
        ...

    async def expire_code(self, identification_id: str, now: datetime) -> bool: ...

    async def record_wrong_code(
        self, identification_id: str, now: datetime
    ) -> Identification | None: ...

    async def begin_verification(
        self,
        identification_id: str,
        *,
        verify_key: str,
        deadline: datetime,
        now: datetime,
        lease: Lease,
    ) -> bool:
        """AWAITING_CODE -> VERIFYING, held by lease.holder until lease.expires_at; stored
        before the operator is asked."""
        ...

    async def finish_verification(
        self,
        identification_id: str,
        verify_key: str,
        *,
        state: State,
        reason: Reason,
        now: datetime,
        operator_id: str | None = None,
        identification_code: str | None = None,
        within_window: bool,
    ) -> tuple[State, Reason] | None:
        """VERIFYING -> state, only if still VERIFYING under verify_key (and, with
        within_window, before its deadline); the (state, reason) recorded, None if nothing
        changed."""
        ...

    async def follow_hint(
        self,
        identification_id: str,
        verify_key: str,
        *,
        recipient: str,
        donor: str,
        now: datetime,
    ) -> bool: ...

    async def remember_hint(self, phone_number: str, recipient: str, now: datetime) -> bool: ...

    async def expire_overdue(self, now: datetime) -> list[str]:
        """VERIFYING past its deadline -> NOT_COMPLETED OPERATOR_TIMEOUT; their ids."""
        ...

    # --- verification leases --------------------------------------------------------------------

    async def claim_verifications(
        self, lease: Lease, *, now: datetime, limit: int = 1000
    ) -> list[Identification]:
        """Take for lease.holder, until lease.expires_at, the VERIFYING identifications within
        their window that nobody holds (never held, released, or their lease expired at `now`),
        oldest first, at most `limit`. Two replicas claiming at once never take the same one."""
        ...

    async def renew_verifications(self, lease: Lease, running: Sequence[str]) -> list[str]:
        """Extend the leases lease.holder holds on `running` (the ids it is verifying: only a
        verification that runs keeps its lease) to lease.expires_at; of those, the ones still
        VERIFYING that another holder has taken (the holder's verification of them must
        stop)."""
        ...

    async def release_verifications(self, holder: str) -> int:
        """Free the VERIFYING identifications holder holds (shutdown): any replica may take
        them at once. How many."""
        ...

    # --- notices and ported numbers ---------------------------------------------------------------

    async def apply_notices(
        self,
        messenger_id: str,
        notices: Sequence[tuple[TerminationNotice, bool]],
        *,
        now: datetime,
    ) -> list[NoticeResult]:
        """In one transaction, for each (notice, revoke) in order: the event id into the inbox
        (a repeat, also within the batch, changes nothing), with revoke the identifications it
        names revoked; then the cursor advanced to the last seq."""
        ...

    async def stage_ported(
        self, import_id: str, rows: Sequence[tuple[int, PortedNumber]]
    ) -> None: ...

    async def commit_ported(self, import_id: str, now: datetime) -> int: ...

    async def discard_ported(self, import_id: str) -> None: ...


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

    def changes_signalled(self, wake: ChangeSignal) -> AbstractAsyncContextManager[None]:
        """While the block runs, call wake() when another process commits changes; a no-op
        where only the poll can tell."""
        ...
