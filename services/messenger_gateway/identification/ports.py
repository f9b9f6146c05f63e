"""The identification feature's ports: its store and unit of work, and the SMS channel, the
router, the operators' registries and the listener it is given.

GatewayStore (identifications, with the notices' and the ported numbers' store ports and the
leases, on one database): adapters.store.SqliteGatewayStore and adapters.store_pg.PgGatewayStore;
the PostgreSQL adapter serves several replicas on one database; both pass the same tests
(parametrised by engine).

Identifications change only through the unit of work: a transaction function over an
IdentificationTx (transactions.py) reads the rows, the state machine (transitions.py) decides,
and the write is a compare-and-set on the state the row leaves, so that the first of two racing
writers wins and the other changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar

from services.common.lease import Fence, Lease, LeaseTable
from services.common.logging import get_logger
from services.messenger_gateway.identification.model import (
    Identification,
    OperatorAnswer,
    Reassignment,
    SmsMessage,
)
from services.messenger_gateway.notices.model import TerminationKind, TerminationNotice
from services.messenger_gateway.notices.ports import NoticeStore
from services.messenger_gateway.policy.model import PolicyChange
from services.messenger_gateway.routing.model import PortedNumber
from services.messenger_gateway.routing.ports import PortedNumbersStore
from services.messenger_gateway.routing.router import Route

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
        self,
        before: Identification,
        after: Identification,
        *,
        lease: Lease | None = None,
        fence: Fence | None = None,
    ) -> bool:
        """Write `after` over the row only if it is still as `before` left it (its state,
        verify key and attempts left) and, with fence, its lease is still held by fence.holder
        under fence.token; with lease, the row is held by lease.holder until lease.expires_at
        under after.lease_token. Did it?"""
        ...

    async def holds_lease(self, fence: Fence) -> bool:
        """Whether the named lease fence.name is still held by fence.holder under fence.token;
        if so, nobody takes it before this transaction ends."""
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

    async def log_mark(self) -> int:
        """Where the delivery policy's change log stands before this transaction logs anything:
        what own_policy_changes() is given."""
        ...

    async def own_policy_changes(self, mark: int) -> list[PolicyChange]:
        """The change-log entries this transaction logged since log_mark() gave mark, with their
        versions, in version order: the transaction's last statement (on PostgreSQL it gives
        them their versions now, holding the log's head until the commit)."""
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


class GatewayStore(NoticeStore, PortedNumbersStore, LeaseTable, Protocol):
    """Named leases (acquire_lease, release_lease, lease_of, leases: LeaseTable) hold the notice
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
    the transaction wrote it and the change-log entries the transaction logged, versions
    included (the delivery policy's index: whether a user is known and identified)."""

    async def identification_changed(
        self, ident: Identification, changes: Sequence[PolicyChange] | None
    ) -> None: ...


class PolicyRefresh(Protocol):
    """The delivery policy's index, caught up from the change log on demand."""

    async def catch_up(self) -> int: ...


class PolicyFollower(IdentificationListener, PolicyRefresh, Protocol):
    """The delivery policy as the identification flow sees it (policy_service.PolicyService)."""


async def tell(
    listener: IdentificationListener | None,
    ident: Identification,
    changes: Sequence[PolicyChange] | None = None,
) -> None:
    """Tell the listener of a committed change; its failure is logged, not raised (the change
    is committed; the policy's tailer catches up on its own)."""
    if listener is None:
        return
    try:
        await listener.identification_changed(ident, changes)
    except Exception:
        log.exception("identification.change_listener_failed")
