"""The gateway's store ports: what the service layer needs from a store, whatever the engine.

GatewayStore (identifications, notices, ported numbers, leases): store.SqliteGatewayStore and
store_pg.PgGatewayStore. PolicyStore (the delivery policy): policy_store.SqlitePolicyStore and
policy_store_pg.PgPolicyStore. The PostgreSQL adapters serve several replicas on one database;
both pairs pass the same tests (parametrised by engine).

Identifications change only through the unit of work: a transaction function over an
IdentificationTx (transactions.py) reads the rows, the state machine (transitions.py) decides,
and the write is a compare-and-set on the state the row leaves, so that the first of two racing
writers wins and the other changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, Protocol, TypeVar

from services.common.lease import Lease, LeaseStore
from services.common.logging import get_logger
from services.messenger_gateway.domain import (
    Identification,
    OperatorAnswer,
    PortedNumber,
    Reassignment,
    SmsMessage,
    TerminationKind,
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
from services.messenger_gateway.routing import Route

log = get_logger("idmesh.gateway")
T = TypeVar("T")


class IdentificationTx(Protocol):
    """Statements inside one write transaction of the identification store. The decisions are
    the transaction functions' (transactions.py); these only read and write rows."""

    async def lock_user(self, user_id: str) -> None:
        """Serialise with the other transactions replacing the user's identification."""
        ...

    async def get(self, identification_id: str) -> Identification | None: ...

    async def current(self, user_id: str) -> Identification | None: ...

    async def by_idempotency_key(self, user_id: str, key: str) -> Identification | None: ...

    async def insert(self, new: Identification, idempotency_key: str | None) -> None: ...

    async def compare_and_set(
        self, before: Identification, after: Identification, *, lease: Lease | None = None
    ) -> bool:
        """Write `after` over the row only if it is still as `before` left it (its state,
        verify key and attempts left); with lease, the row is held by lease.holder until
        lease.expires_at. Did it?"""
        ...

    async def ended_by_notice(self, operator_id: str, code: str) -> TerminationKind | None:
        """The kind of the applied notice that ended (operator, code), if any; serialised until
        the commit with add_to_inbox for the same pair."""
        ...

    async def overdue(self, now: datetime) -> list[Identification]:
        """VERIFYING identifications whose deadline has passed at `now`, oldest first."""
        ...

    async def identified_with_code(self, operator_id: str, code: str) -> list[Identification]: ...

    async def remember_route(self, entry: PortedNumber) -> bool:
        """Insert or replace (by a strictly later ported_at) a ported-numbers row."""
        ...

    async def notice_cursor(self, messenger_id: str) -> int: ...

    async def add_to_inbox(
        self, notice: TerminationNotice, *, ends_code: bool, now: datetime
    ) -> bool:
        """The notice's event id into the inbox (with ends_code, the code it ends); False if it
        was there already."""
        ...

    async def set_inbox_revoked(self, event_id: str, revoked: int) -> None: ...

    async def advance_notice_cursor(self, messenger_id: str, seq: int) -> None:
        """The cursor to seq, never backwards."""
        ...


TxFunction = Callable[[IdentificationTx], Coroutine[Any, Any, T]]

# --- the identification flow's other ports ----------------------------------------------------


class SmsSender(Protocol):
    async def send(self, message: SmsMessage) -> None: ...


class NumberRouter(Protocol):
    async def resolve(self, e164: str) -> Route: ...


class OperatorDirectory(Protocol):
    """The operators' registries. verify() returns the operator's answer or raises
    OperatorUnavailable when asking again may help. check_reassigned() raises
    OperatorUnavailable when the operator could not be asked, OperatorRefused when it has no
    agreement with this messenger."""

    def knows(self, operator_id: str) -> bool: ...

    async def verify(
        self, operator_id: str, *, idempotency_key: str, phone_number: str, time_limit: float
    ) -> OperatorAnswer: ...

    async def check_reassigned(
        self, operator_id: str, *, phone_number: str, since: datetime, time_limit: float
    ) -> Reassignment: ...


class IdentificationListener(Protocol):
    """Told each identification change the identification writes committed, with the row as
    the transaction wrote it (the delivery policy's index: whether a user is known and
    identified)."""

    async def identification_changed(self, ident: Identification) -> None: ...


class PolicyRefresh(Protocol):
    """The delivery policy's index, caught up from the change log on demand."""

    async def catch_up(self) -> int: ...


class PolicyFollower(IdentificationListener, PolicyRefresh, Protocol):
    """The delivery policy as the identification flow sees it (policy_service.PolicyService)."""


async def tell(listener: IdentificationListener | None, ident: Identification) -> None:
    """Tell the listener of a committed change; its failure is logged, not raised (the change
    is committed; the policy's tailer catches up on its own)."""
    if listener is None:
        return
    try:
        await listener.identification_changed(ident)
    except Exception:
        log.exception("identification.change_listener_failed")


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

    # --- the unit of work ---------------------------------------------------------------------

    async def run(self, fn: TxFunction[T]) -> T:
        """fn(tx) as one write transaction: committed when fn returns, rolled back when it
        raises (the exception propagates as it is)."""
        ...

    async def run_grouped(self, fn: TxFunction[T]) -> T:
        """Like run(fn); on SQLite sharing one COMMIT with the calls that arrive together (group
        commit), each in a savepoint of its own, so each is still all or nothing."""
        ...

    async def remember_hint(self, phone_number: str, recipient: str, now: datetime) -> bool: ...

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
