"""The registry's store port: the unit of work (RegistryStore) and its transaction functions
(RegistryTx), whatever the engine.

A use case writes its whole transaction as one `async def fn(tx: RegistryTx) -> T` that awaits
only tx's methods, and runs it with `await store.run(fn)`: committed when fn returns, rolled
back when it raises (the exception propagates as it is). fn may run more than once (a grouped
transaction that is redone, a PostgreSQL transaction retried after a unique-key race with
another replica), so it must have no effects outside the database that matter twice.

Adapters: store.SqliteRegistryStore (fn driven to completion on the writer thread: one thread
hop however many statements) and store_pg.PgRegistryStore (asyncpg; several replicas on one
database). Both pass the same tests (tests/operator_registry, parametrised by engine).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

from services.operator_registry.domain import (
    Agreement,
    AgreementState,
    AuditQuery,
    AuditRecord,
    Binding,
    Contract,
    NumberHistory,
    ParkedNotice,
    Subscriber,
    TerminationNotice,
    TerminationReason,
    Verification,
)
from services.operator_registry.import_store import ProblemRow, StagedRow

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class VerificationSnapshot:
    """What VerifySubscriber needs to decide, read in one statement."""

    agreement_state: AgreementState | None
    previous: Verification | None
    active_contract_id: str | None
    binding: Binding | None
    # The recipient of the number's most recent contract, if it ended by porting out.
    ported_to: str | None = None


class RegistryTx(Protocol):
    """Statements inside one write transaction."""

    async def add_audit(self, record: AuditRecord) -> None: ...

    async def verification_snapshot(
        self, messenger_id: str, idempotency_key: str, phone_number: str
    ) -> VerificationSnapshot:
        """Also holds the number's active contract against termination until the commit."""
        ...

    async def add_binding(self, binding: Binding) -> None: ...

    async def add_verification(self, answer: Verification) -> None:
        """Store the answer to (messenger, request id), replacing a stale stored one."""
        ...

    async def subscriber(self, phone_number: str) -> Subscriber | None:
        """The number's active (else most recent) contract with its bindings; the active
        contract is locked against concurrent verifications until the commit."""
        ...

    async def contract_conflicts(
        self, phone_number: str, contract_id: str
    ) -> tuple[str | None, str | None]:
        """(the number's active contract id, the number holding contract_id), either None."""
        ...

    async def numbers_with_contracts(self, phone_numbers: Iterable[str]) -> set[str]: ...

    async def contract_holders(self, contract_ids: Iterable[str]) -> dict[str, str]:
        """contract_id -> phone number, for those of contract_ids that exist."""
        ...

    async def add_contracts(self, contracts: Sequence[Contract]) -> None: ...

    async def terminate(
        self,
        contract_id: str,
        at: datetime,
        reason: TerminationReason,
        recipient_operator_id: str | None = None,
    ) -> None: ...

    async def add_notices(
        self, notices: Sequence[TerminationNotice], created_at: datetime
    ) -> None: ...

    async def register_agreement(
        self, messenger_id: str, display_name: str | None, at: datetime
    ) -> Agreement:
        """Create the agreement active, or reactivate it; display_name None keeps the name."""
        ...

    async def add_missing_agreements(self, agreements: Sequence[Agreement]) -> int: ...

    async def suspend_agreement(self, messenger_id: str, at: datetime) -> Agreement | None: ...


TxFunction = Callable[[RegistryTx], Coroutine[Any, Any, T]]


class ImportStaging(Protocol):
    """One bulk import's staging area (see bulk.py and import_store.py)."""

    staged: int

    async def open(self) -> ImportStaging: ...

    async def close(self) -> None: ...

    async def stage(self, rows: Sequence[StagedRow]) -> None: ...

    async def mark_duplicates(self) -> None: ...

    async def mark_conflicts(self) -> None: ...

    async def counts(self) -> tuple[int, int]:
        """(good rows, rejected rows)."""
        ...

    async def problems(self, limit: int) -> list[ProblemRow]: ...

    async def count_contracts(self) -> int: ...

    async def merge_all(self, *, rebuild_indexes: bool) -> int | None: ...

    async def merge_chunk(self, after_seq: int, up_to_seq: int) -> int: ...


class RegistryStore(Protocol):
    async def run(self, fn: TxFunction[T]) -> T:
        """fn(tx) as one write transaction (see the module docstring)."""
        ...

    async def run_grouped(
        self, fn: TxFunction[T], *, before_commit: Callable[[], None] | None = None
    ) -> T:
        """Like run(fn), but the engine may share the transaction with concurrent calls (each
        with its own outcome); before_commit() runs right before the commit and raises to
        refuse it (e.g. a deadline that passed)."""
        ...

    async def add_audit(self, record: AuditRecord) -> None: ...

    async def list_audit(self, query: AuditQuery) -> list[tuple[int, AuditRecord]]:
        """Newest first, with each record's id (the next page's token)."""
        ...

    async def prune_audit(self, before: datetime) -> int: ...

    def import_staging(self) -> ImportStaging: ...

    async def get_subscriber(self, phone_number: str) -> Subscriber | None: ...

    async def get_agreement(self, messenger_id: str) -> Agreement | None: ...

    async def list_agreements(self) -> list[Agreement]: ...

    async def pending_notices(self, limit: int) -> list[TerminationNotice]:
        """Up to limit unpublished notices, oldest first; with several replicas, each notice
        goes to one relay at a time (claimed for a lease that a dead relay lets expire)."""
        ...

    async def count_pending_notices(self) -> int: ...

    async def outbox_backlog(self) -> tuple[int, datetime | None]:
        """(unpublished notices, when the oldest of them was queued)."""
        ...

    async def count_bindings(self) -> int: ...

    async def count_verifications(self) -> int: ...

    async def number_history(self, phone_number: str) -> NumberHistory: ...

    async def records_begin_at(self) -> datetime: ...

    async def mark_published(self, event_ids: Sequence[str], at: datetime) -> int: ...

    async def release_notices(self, event_ids: Sequence[str]) -> int:
        """Give up this relay's claims on these unpublished notices (its Publish failed), so
        that another replica's relay may take them at once; how many it gave up."""
        ...

    async def count_parked_notices(self) -> int: ...

    async def list_parked_notices(self, after_seq: int, limit: int) -> list[ParkedNotice]:
        """Parked notices after outbox position after_seq, oldest first."""
        ...

    async def park_notice(self, event_id: str, status: str, message: str, at: datetime) -> int:
        """Take an unpublished notice out of the relay's queue, with the refusal."""
        ...

    async def requeue_parked(self, event_ids: Sequence[str]) -> int:
        """Put parked notices back in the queue: those named, or all of them when none is."""
        ...

    async def prune_verifications(self, before: datetime) -> int:
        """Retention: delete stored VerifySubscriber answers given before `before`."""
        ...


class NoticeOutbox(Protocol):
    """The transactional outbox as the relay (relay.py) and its metrics see it: the use cases'
    side of it (RegistryService provides it)."""

    operator_id: str

    async def pending_notices(self, limit: int) -> list[TerminationNotice]:
        """Up to limit unpublished notices, oldest first, claimed for this replica."""
        ...

    async def wait_for_notices(self, max_wait: float) -> None:
        """Return when a termination queued notices, or after max_wait seconds."""
        ...

    async def release_notices(self, event_ids: Sequence[str]) -> int: ...

    async def mark_published(self, event_ids: Sequence[str]) -> int: ...

    async def park_notice(self, event_id: str, status: str, message: str) -> None: ...

    async def outbox_backlog(self) -> tuple[int, float]:
        """(unpublished notices, the oldest one's age in seconds)."""
        ...

    async def count_parked_notices(self) -> int: ...
