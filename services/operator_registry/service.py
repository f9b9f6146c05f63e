"""The registry's use cases, over the store: no grpc, no generated code.

Identity is resolved by the caller of these methods (grpc_api.py) and passed in as plain ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
import uuid
from collections.abc import AsyncIterable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Final

from prometheus_client import Counter

from services.common.context import log_with_rpc, trace_id_now
from services.common.errors import DomainError, InvalidInput, StoreUnavailable, quote
from services.common.failpoints import async_failpoint, failpoint
from services.common.identity import validate_id
from services.common.logging import get_logger
from services.common.phone import mask, parse_e164, parse_mobile, require_e164
from services.common.ratelimit import KeyedTokenBucket, RateLimit
from services.common.timeutil import Clock, SystemClock
from services.operator_registry.bulk import ImportBatch, ImportOutcome, SubscriberImport
from services.operator_registry.domain import (
    AUDIT_PAGE_MAX,
    PARKED_MESSAGE_MAX,
    PARKED_PAGE_MAX,
    Agreement,
    AgreementRequired,
    AgreementState,
    AuditQuery,
    AuditRecord,
    Binding,
    BulkTermination,
    Contract,
    ContractNotActive,
    ContractState,
    DeadlinePassed,
    IdempotencyKeyReused,
    MessengerNotFound,
    ParkedNotice,
    ReassignmentAnswer,
    RegistryError,
    Subscriber,
    SubscriberExists,
    SubscriberNotFound,
    Termination,
    TerminationNotice,
    TerminationOutcome,
    TerminationReason,
    TerminationRefusal,
    TerminationRowInput,
    Verification,
    VerificationResult,
    decide_reassignment,
    new_identification_code,
    normalise_display_name,
    one_idempotency_key,
    refusal_outcome,
    validate_contract_id,
    validate_idempotency_key,
    validate_recipient,
)
from services.operator_registry.ports import RegistryStore, RegistryTx

log = get_logger("idmesh.operator_registry")

MAX_TERMINATIONS_PER_BATCH: Final = 10_000
MAX_TERMINATION_REFUSALS: Final = 1_000

VERIFICATIONS = Counter(
    "idmesh_registry_verifications",
    "VerifySubscriber answers committed (replays of a request id not counted), by messenger "
    "and result (identified, no_subscriber).",
    ["messenger_id", "result"],
)


class _VerificationCounts:
    """VERIFICATIONS' children per (messenger, result), looked up once: .labels() takes a
    lock and builds its key on every call. Bounded by the messengers with an agreement."""

    def __init__(self) -> None:
        self._children: dict[tuple[str, VerificationResult], Any] = {}

    def inc(self, messenger_id: str, result: VerificationResult) -> None:
        child = self._children.get((messenger_id, result))
        if child is None:
            child = VERIFICATIONS.labels(messenger_id=messenger_id, result=result.value)
            self._children[(messenger_id, result)] = child
        child.inc()


TERMINATION_ROWS = Counter(
    "idmesh_registry_bulk_termination_rows",
    "Rows of bulk terminations (TerminateContracts), by outcome (ended, refused).",
    ["outcome"],
)


class SeedConflict(RegistryError):
    """Seed contracts whose contract_id already belongs to another number."""

    REASON = "SUBSCRIBER_EXISTS"

    def __init__(self, message: str, contract_ids: Sequence[str]) -> None:
        super().__init__(message)
        self.contract_ids = tuple(contract_ids)


class _Answered(enum.Enum):
    """How a verification transaction answered."""

    NEW = "new"  # a new answer, the number's existing binding (or none: no subscriber)
    NEW_BINDING = "new_binding"  # a new answer with a binding made for it
    REPLAYED = "replayed"  # the stored answer to the same request id


@dataclass(frozen=True, slots=True)
class SeedOutcome:
    messengers_added: int
    subscribers_added: int
    subscribers_skipped: int


class RegistryService:
    def __init__(
        self,
        store: RegistryStore,
        *,
        operator_id: str,
        clock: Clock | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        new_code: Callable[[], str] = new_identification_code,
        records_begin_at: datetime | None = None,
        verify_limit: RateLimit | None = None,
    ) -> None:
        self._store = store
        self._verify_limiter = KeyedTokenBucket(verify_limit) if verify_limit else None
        self.operator_id = operator_id
        self._records_begin_at = records_begin_at
        self._clock = clock or SystemClock()
        self._monotonic = monotonic
        self._new_code = new_code
        self._notices_queued = asyncio.Event()
        self._verifications = _VerificationCounts()

    # --- RegistryService --------------------------------------------------------------------

    async def verify_subscriber(
        self,
        messenger_id: str,
        idempotency_key: str,
        phone_number: str,
        *,
        time_remaining: float | None,
        key_alias: str = "",
    ) -> Verification:
        """Answer one verification request of messenger_id, and audit it whatever the outcome:
        an answer with its audit record in one function on the writer thread (one thread hop;
        concurrent requests share the transaction, each with its own outcome: group commit),
        a refusal's audit record in a transaction of its own.

        time_remaining is the caller's remaining deadline in seconds (None: no deadline); the
        answer is committed only if the deadline has not passed right before the commit.
        key_alias is the key under the request's second name for it (empty, or equal).
        """
        try:
            if self._verify_limiter is not None:
                self._verify_limiter.acquire(
                    messenger_id, f"verification requests from messenger {messenger_id}"
                )
            return await self._verify(
                messenger_id, idempotency_key, key_alias, phone_number, time_remaining
            )
        except DomainError as exc:
            # the store cannot take the audit record now: the refusal stands as it is
            with contextlib.suppress(StoreUnavailable):
                await self._store.add_audit(
                    self._audit(
                        messenger_id,
                        idempotency_key or key_alias,
                        phone_number,
                        refusal_outcome(exc),
                    )
                )
            raise

    def _audit(
        self, messenger_id: str, idempotency_key: str, phone_number: str, outcome: str
    ) -> AuditRecord:
        return AuditRecord(
            recorded_at=self._clock.now(),
            messenger_id=messenger_id,
            masked_phone_number=mask((phone_number or "")[:20]),
            idempotency_key=(idempotency_key or "")[:64],
            outcome=outcome,
        )

    async def _verify(
        self,
        messenger_id: str,
        idempotency_key: str,
        key_alias: str,
        phone_number: str,
        time_remaining: float | None,
    ) -> Verification:
        deadline = None if time_remaining is None else self._monotonic() + time_remaining
        try:
            idempotency_key = validate_idempotency_key(
                one_idempotency_key(idempotency_key, key_alias)
            )
            phone = require_e164(phone_number)
        except InvalidInput:
            # A messenger without an agreement is refused whatever it sends.
            await self._require_agreement(messenger_id)
            raise
        self._check_deadline(deadline)  # already passed: do not even take the writer lock
        now = self._clock.now()
        replayed = False

        async def verify(tx: RegistryTx) -> tuple[Verification, _Answered]:
            """The whole decision in one transaction on the writer thread (no awaiting)."""
            nonlocal replayed
            replayed = False  # it may run again (see Database.run_grouped)
            snap = await tx.verification_snapshot(messenger_id, idempotency_key, phone)
            if snap.agreement_state is not AgreementState.ACTIVE:
                raise self._no_agreement(messenger_id)
            if snap.previous is not None and snap.previous.phone_number != phone:
                raise IdempotencyKeyReused(
                    f"idempotency_key {quote(idempotency_key)} was already used for another "
                    "number: use a new idempotency_key for every verification"
                )
            if snap.previous is not None and snap.previous.replayable(snap.active_contract_id):
                await tx.add_audit(
                    self._audit(
                        messenger_id, idempotency_key, phone, snap.previous.result.value.upper()
                    )
                )
                replayed = True
                return snap.previous, _Answered.REPLAYED
            # No stored answer, or a stored IDENTIFIED whose contract has ended since (the reply
            # was lost and the messenger asks again): answer as the registry stands now, so a
            # replay never identifies a user on a terminated contract.
            how = _Answered.NEW
            if snap.active_contract_id is None:
                answer = Verification(
                    messenger_id=messenger_id,
                    idempotency_key=idempotency_key,
                    phone_number=phone,
                    result=VerificationResult.NO_SUBSCRIBER,
                    answered_at=now,
                    recipient_operator_id=snap.ported_to,
                )
            else:
                binding = snap.binding
                if binding is None:
                    binding = Binding(
                        contract_id=snap.active_contract_id,
                        messenger_id=messenger_id,
                        identification_code=self._new_code(),
                        bound_at=now,
                    )
                    await tx.add_binding(binding)
                    how = _Answered.NEW_BINDING
                answer = Verification(
                    messenger_id=messenger_id,
                    idempotency_key=idempotency_key,
                    phone_number=phone,
                    result=VerificationResult.IDENTIFIED,
                    answered_at=now,
                    contract_id=binding.contract_id,
                    identification_code=binding.identification_code,
                    identified_at=binding.bound_at,
                )
            await tx.add_verification(answer)
            await tx.add_audit(
                self._audit(messenger_id, idempotency_key, phone, answer.result.value.upper())
            )
            return answer, how

        def before_commit() -> None:
            if not replayed:  # a new answer is stored only within the deadline
                self._check_deadline(deadline)
            failpoint("registry.verify.before_commit")

        # Concurrent verifications share transactions (group commit), each with its own
        # outcome; the deadline is checked right before the commit that would store the answer.
        answer, how = await self._store.run_grouped(verify, before_commit=before_commit)
        await async_failpoint("registry.verify.after_commit")
        # The outcome goes in the RPC's one log line (a line of its own outside an RPC).
        fields: dict[str, object] = {
            "phone": mask(phone),
            "result": answer.result.value,
            "replayed": how is _Answered.REPLAYED,
        }
        if how is not _Answered.REPLAYED:
            fields["new_binding"] = how is _Answered.NEW_BINDING
            fields["recipient_operator_id"] = answer.recipient_operator_id
            self._verifications.inc(messenger_id, answer.result)
        if not log_with_rpc(**fields):
            log.info("verification.answered", messenger_id=messenger_id, **fields)
        return answer

    async def list_audit(self, query: AuditQuery) -> tuple[list[AuditRecord], int | None]:
        """A page of the audit trail, newest first, and the next page's token (None: last)."""
        if not 0 < query.page_size <= AUDIT_PAGE_MAX:
            raise InvalidInput(f"page_size must be 1 to {AUDIT_PAGE_MAX}, got {query.page_size}")
        rows = await self._store.list_audit(query)
        next_token = rows[-1][0] if len(rows) == query.page_size else None
        return [record for _, record in rows], next_token

    async def prune_audit(self, retention: timedelta) -> int:
        removed = await self._store.prune_audit(self._clock.now() - retention)
        if removed:
            log.info("audit.pruned", records=removed)
        return removed

    async def prune_verifications(self, retention: timedelta) -> int:
        """Retention of the stored VerifySubscriber answers (kept so that a retried request
        gets the same answer; a gateway retries within its 20-minute window)."""
        removed = await self._store.prune_verifications(self._clock.now() - retention)
        if removed:
            log.info("verifications.pruned", answers=removed)
        return removed

    async def check_number_reassigned(
        self, messenger_id: str, phone_number: str, since: datetime | None
    ) -> ReassignmentAnswer:
        """Has the number changed hands after `since`? (see domain.decide_reassignment for the
        boundaries). Asked by messengers with an active agreement, like VerifySubscriber; a
        messenger without one is refused whatever it sends."""
        await self._require_agreement(messenger_id)
        phone = require_e164(phone_number)
        if since is None:
            raise InvalidInput(
                "since is missing: give the time to ask about, typically when the user was "
                "identified"
            )
        now = self._clock.now()
        if since > now:
            raise InvalidInput(
                f"since {since.isoformat()} is in the future (now is {now.isoformat()}): ask "
                "about a past time"
            )
        begin = await self.records_begin_at()
        history = await self._store.number_history(phone)
        status = decide_reassignment(history, since, begin)
        log.info(
            "reassignment.checked",
            messenger_id=messenger_id,
            phone=mask(phone),
            since=since.isoformat(),
            status=status.value,
        )
        return ReassignmentAnswer(status, begin)

    async def records_begin_at(self) -> datetime:
        """IDMESH_RECORDS_BEGIN_AT if configured, else the earlier of the database's creation
        time and the earliest contract activation."""
        return self._records_begin_at or await self._store.records_begin_at()

    def _check_deadline(self, deadline: float | None) -> None:
        if deadline is not None and self._monotonic() >= deadline:
            raise DeadlinePassed(
                "the deadline passed before the answer could be recorded, so nothing was "
                "recorded: retry with the same idempotency_key and a longer deadline"
            )

    def _no_agreement(self, messenger_id: str) -> AgreementRequired:
        return AgreementRequired(
            f"messenger {messenger_id} has no active identification agreement with operator "
            f"{self.operator_id}: ask the operator to register it"
        )

    async def _require_agreement(self, messenger_id: str) -> None:
        agreement = await self._store.get_agreement(messenger_id)
        if agreement is None or agreement.state is not AgreementState.ACTIVE:
            raise self._no_agreement(messenger_id)

    # --- RegistryAdminService: contracts ----------------------------------------------------

    async def create_subscriber(
        self, phone_number: str, contract_id: str, activated_at: datetime | None = None
    ) -> Subscriber:
        phone = parse_mobile(phone_number)
        contract_id = validate_contract_id(contract_id)
        contract = Contract(
            contract_id=contract_id,
            phone_number=phone,
            state=ContractState.ACTIVE,
            activated_at=activated_at or self._clock.now(),
        )

        async def create(tx: RegistryTx) -> None:
            active_id, holder = await tx.contract_conflicts(phone, contract_id)
            if active_id is not None:
                raise SubscriberExists(
                    f"{mask(phone)} already has an active contract ({active_id}): "
                    "terminate it before creating another"
                )
            if holder is not None:
                raise SubscriberExists(
                    f"contract_id {quote(contract_id)} is already taken: choose another contract_id"
                )
            await tx.add_contracts([contract])

        await self._store.run(create)
        log.info("subscriber.created", phone=mask(phone), contract_id=contract_id)
        return Subscriber(contract)

    async def get_subscriber(self, phone_number: str) -> Subscriber:
        phone = parse_e164(phone_number)
        subscriber = await self._store.get_subscriber(phone)
        if subscriber is None:
            raise SubscriberNotFound(f"{mask(phone)} has no contract with this operator")
        return subscriber

    async def port_out(self, phone_number: str, recipient_operator_id: str) -> Termination:
        """The number moved to recipient_operator_id: its active contract ends PORTED_OUT, with
        the recipient kept on the contract and in every notice (the TerminateContract path)."""
        recipient = validate_recipient(recipient_operator_id, self.operator_id)
        return await self.terminate_contract(
            phone_number, TerminationReason.PORTED_OUT, recipient_operator_id=recipient
        )

    async def terminate_contract(
        self,
        phone_number: str,
        reason: TerminationReason = TerminationReason.CONTRACT_ENDED,
        *,
        recipient_operator_id: str | None = None,
    ) -> Termination:
        """End the number's active contract and queue one notice per bound messenger, in one
        transaction; then wake the outbox relay. recipient_operator_id (port-out only) is kept
        on the contract and sent in the notices."""
        if recipient_operator_id is not None and reason is not TerminationReason.PORTED_OUT:
            raise ValueError("a recipient operator is only for TerminationReason.PORTED_OUT")
        phone = parse_e164(phone_number)
        now = self._clock.now()
        # One transaction per termination (run, not run_grouped): grouping them was faster, but
        # under an open-loop overload (bench: 1,000/s) a registry that completes calls in groups
        # leaves gRPC's accept loop behind, and gRPC then rejects the unaccepted calls
        # (CANCELLED, grpc.server.max_pending_requests) instead of queueing them; an operator's
        # termination is not retried the way a gateway retries VerifySubscriber. Many
        # terminations at once go through terminate_contracts (one transaction per batch).
        trace_id = trace_id_now()
        termination = await self._store.run(
            lambda tx: self._terminate(tx, phone, reason, recipient_operator_id, now, trace_id)
        )
        await async_failpoint("registry.terminate.after_commit")
        self._notices_queued.set()
        _log_termination(termination)
        return termination

    async def _terminate(
        self,
        tx: RegistryTx,
        phone: str,
        reason: TerminationReason,
        recipient_operator_id: str | None,
        now: datetime,
        trace_id: str,
    ) -> Termination:
        """In a transaction: end phone's active contract, queue a notice per bound messenger
        (each with trace_id, the request id of the call that ended it). Raises
        SubscriberNotFound or ContractNotActive before writing anything."""
        subscriber = await tx.subscriber(phone)
        if subscriber is None:
            raise SubscriberNotFound(f"{mask(phone)} has no contract with this operator")
        contract = subscriber.contract
        if contract.state is not ContractState.ACTIVE:
            ended = contract.terminated_at.date().isoformat() if contract.terminated_at else "?"
            raise ContractNotActive(
                f"the contract {contract.contract_id} of {mask(phone)} was already "
                f"terminated on {ended}: there is no active contract to terminate"
            )
        await tx.terminate(contract.contract_id, now, reason, recipient_operator_id)
        notices = [
            TerminationNotice(
                event_id=str(uuid.uuid4()),
                operator_id=self.operator_id,
                messenger_id=binding.messenger_id,
                phone_number=phone,
                identification_code=binding.identification_code,
                reason=reason,
                occurred_at=now,
                recipient_operator_id=recipient_operator_id or "",
                trace_id=trace_id,
            )
            for binding in subscriber.bindings
        ]
        await tx.add_notices(notices, now)
        terminated = replace(
            contract,
            state=ContractState.TERMINATED,
            terminated_at=now,
            termination_reason=reason,
            recipient_operator_id=recipient_operator_id,
        )
        return Termination(replace(subscriber, contract=terminated), len(notices))

    async def terminate_contracts(
        self, batches: AsyncIterable[Sequence[TerminationRowInput]]
    ) -> BulkTermination:
        """End contracts in bulk: each batch in one transaction as it arrives, each row on its
        own (ended, or refused with why: the refusals TerminateContract would answer). The relay
        is woken after each batch, so notices flow while the stream goes on."""
        rows = ended = notices = refused = 0
        refusals: list[TerminationRefusal] = []
        trace_id = trace_id_now()  # the stream's request id, on every notice it queues
        async for batch in batches:
            if len(batch) > MAX_TERMINATIONS_PER_BATCH:
                raise InvalidInput(
                    f"rows: a batch has {len(batch)} rows: send at most "
                    f"{MAX_TERMINATIONS_PER_BATCH} rows per message; nothing of it was ended"
                )
            outcomes = await self._store.run(
                partial(self._terminate_rows, batch, self._clock.now(), trace_id)
            )
            rows += len(batch)
            for row, outcome in zip(batch, outcomes, strict=True):
                if isinstance(outcome, Termination):
                    ended += 1
                    notices += outcome.notices_queued
                    _log_termination(outcome, line=row.line)
                    continue
                refused += 1
                if len(refusals) < MAX_TERMINATION_REFUSALS:
                    refusals.append(TerminationRefusal(row.line, *outcome))
            self._notices_queued.set()
        TERMINATION_ROWS.labels(outcome="ended").inc(ended)
        TERMINATION_ROWS.labels(outcome="refused").inc(refused)
        log.info("contracts.terminated_in_bulk", rows=rows, ended=ended, refused=refused)
        return BulkTermination(rows, ended, notices, tuple(refusals), refused)

    async def _terminate_rows(
        self, batch: Sequence[TerminationRowInput], now: datetime, trace_id: str, tx: RegistryTx
    ) -> list[Termination | tuple[TerminationOutcome, str]]:
        return [await self._terminate_row(tx, row, now, trace_id) for row in batch]

    async def _terminate_row(
        self, tx: RegistryTx, row: TerminationRowInput, now: datetime, trace_id: str
    ) -> Termination | tuple[TerminationOutcome, str]:
        """One row of a bulk termination, in the batch's transaction: its Termination, or why
        not (nothing written for it then: _terminate checks before it writes)."""
        try:
            if row.reason is None:
                raise InvalidInput(
                    "reason is not a known TerminationReason: use CONTRACT_ENDED or PORTED_OUT"
                )
            recipient: str | None = None
            if row.reason is TerminationReason.PORTED_OUT:
                recipient = validate_recipient(row.recipient_operator_id, self.operator_id)
            elif row.recipient_operator_id:
                raise InvalidInput(
                    "recipient_operator_id is only for reason PORTED_OUT: leave it empty"
                )
            phone = parse_e164(row.phone_number)
            return await self._terminate(tx, phone, row.reason, recipient, now, trace_id)
        except SubscriberNotFound as exc:
            return TerminationOutcome.NOT_FOUND, exc.message
        except ContractNotActive as exc:
            return TerminationOutcome.NOT_ACTIVE, exc.message
        except InvalidInput as exc:
            return TerminationOutcome.INVALID, exc.message

    # --- RegistryAdminService: agreements ---------------------------------------------------

    async def register_messenger(self, messenger_id: str, display_name: str = "") -> Agreement:
        messenger_id = validate_id(messenger_id, "messenger_id")
        name = normalise_display_name(display_name)
        now = self._clock.now()
        agreement = await self._store.run(lambda tx: tx.register_agreement(messenger_id, name, now))
        log.info("agreement.registered", messenger_id=messenger_id)
        return agreement

    async def suspend_messenger(self, messenger_id: str) -> Agreement:
        messenger_id = validate_id(messenger_id, "messenger_id")
        now = self._clock.now()
        agreement = await self._store.run(lambda tx: tx.suspend_agreement(messenger_id, now))
        if agreement is None:
            raise MessengerNotFound(
                f"messenger {messenger_id} has no agreement with operator {self.operator_id}: "
                "check the id (ListMessengers lists them)"
            )
        log.info("agreement.suspended", messenger_id=messenger_id)
        return agreement

    async def list_messengers(self) -> list[Agreement]:
        return await self._store.list_agreements()

    # --- RegistryAdminService: bulk import ----------------------------------------------------

    async def import_subscribers(self, batches: AsyncIterable[ImportBatch]) -> ImportOutcome:
        """Load contracts from a stream of row batches (see bulk.py)."""
        return await SubscriberImport(self._store.import_staging, clock=self._clock).run(batches)

    # --- seed -------------------------------------------------------------------------------

    async def apply_seed(
        self, agreements: Sequence[Agreement], contracts: Sequence[Contract]
    ) -> SeedOutcome:
        """Add missing agreements (existing ones, suspended included, are left alone) and the
        contracts of numbers that never had one, in one transaction."""

        async def seed(tx: RegistryTx) -> SeedOutcome:
            messengers_added = await tx.add_missing_agreements(agreements)
            known = await tx.numbers_with_contracts(c.phone_number for c in contracts)
            missing = [c for c in contracts if c.phone_number not in known]
            taken = await tx.contract_holders(c.contract_id for c in missing)
            if taken:
                raise SeedConflict(
                    "contract_id already belongs to another number", contract_ids=list(taken)
                )
            await tx.add_contracts(missing)
            return SeedOutcome(messengers_added, len(missing), len(contracts) - len(missing))

        return await self._store.run(seed)

    # --- outbox (for the relay) -------------------------------------------------------------

    async def pending_notices(self, limit: int) -> list[TerminationNotice]:
        """Up to limit unpublished notices, oldest first."""
        return await self._store.pending_notices(limit)

    async def release_notices(self, event_ids: Sequence[str]) -> int:
        """The relay could not publish these: another replica's relay may take them."""
        return await self._store.release_notices(event_ids)

    async def count_pending_notices(self) -> int:
        return await self._store.count_pending_notices()

    async def outbox_backlog(self) -> tuple[int, float]:
        """(unpublished notices, the oldest one's age in seconds): for the metrics."""
        pending, oldest = await self._store.outbox_backlog()
        age = 0.0 if oldest is None else (self._clock.now() - oldest).total_seconds()
        return pending, max(0.0, age)

    async def count_parked_notices(self) -> int:
        return await self._store.count_parked_notices()

    async def park_notice(self, event_id: str, status: str, message: str) -> None:
        """The notifier refused the notice for good: out of the queue, kept with the refusal."""
        await self._store.park_notice(
            event_id, status, message[:PARKED_MESSAGE_MAX], self._clock.now()
        )

    async def list_parked_notices(
        self, page_size: int, page_token: str
    ) -> tuple[list[ParkedNotice], str]:
        """A page of parked notices, oldest first, and the next page's token ("" on the last)."""
        if not 0 < page_size <= PARKED_PAGE_MAX:
            raise InvalidInput(f"page_size must be 1 to {PARKED_PAGE_MAX}, got {page_size}")
        after = 0
        if page_token:
            if not page_token.isdigit() or len(page_token) > 18:
                raise InvalidInput(
                    f"page_token {quote(page_token)} is not valid: give the next_page_token of "
                    "the previous page"
                )
            after = int(page_token)
        parked = await self._store.list_parked_notices(after, page_size)
        next_token = str(parked[-1].seq) if len(parked) == page_size else ""
        return parked, next_token

    async def retry_parked_notices(self, event_ids: Sequence[str]) -> int:
        """Queue parked notices again (the named ones, or all); the relay is woken."""
        if len(event_ids) > PARKED_PAGE_MAX:
            raise InvalidInput(
                f"event_ids names {len(event_ids)} notices: give at most {PARKED_PAGE_MAX} per "
                "call, or none to retry every parked notice"
            )
        requeued = await self._store.requeue_parked(list(dict.fromkeys(event_ids)))
        if requeued:
            self._notices_queued.set()
        log.info("outbox.parked_requeued", requeued=requeued, named=len(event_ids))
        return requeued

    async def mark_published(self, event_ids: Sequence[str]) -> int:
        return await self._store.mark_published(event_ids, self._clock.now())

    async def wait_for_notices(self, max_wait: float) -> None:
        """Return when a termination queued notices (since the last return), or after max_wait
        seconds."""
        # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a cancellation
        # that arrives as the event is set, and the relay would then never stop.
        try:
            async with asyncio.timeout(max_wait):
                await self._notices_queued.wait()
        except TimeoutError:
            pass
        self._notices_queued.clear()


def _log_termination(termination: Termination, **extra: object) -> None:
    """The log line of a committed termination."""
    contract = termination.subscriber.contract
    log.info(
        "contract.terminated",
        phone=mask(contract.phone_number),
        contract_id=contract.contract_id,
        reason=contract.termination_reason.value if contract.termination_reason else None,
        recipient_operator_id=contract.recipient_operator_id,
        notices_queued=termination.notices_queued,
        **extra,
    )
