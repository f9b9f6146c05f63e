"""The identification writes, each one transaction over the store's unit of work
(GatewayStore.run / run_grouped with an IdentificationTx), written once for both engines.

Each reads the rows it decides on, asks the state machine (transitions.py) what follows, and
has the store compare-and-set the result on the state it leaves; the SQLite and PostgreSQL
adapters only run the statements. A refused write (IdempotentReplay, SameNumber, ...) raises
and so changes nothing; a write the machine has no row for returns None and changes nothing.

Transaction functions may run more than once (a grouped SQLite transaction redone), so they
have no effect outside the database.

Writes made under a lease (the verifying replica's, the notice consumer's) take its Fence and
check it in the same transaction: when another replica has taken the lease since, they raise
LeaseFenced and change nothing (services/common/lease.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from enum import Enum, auto

from services.common.errors import quote
from services.common.failpoints import failpoint
from services.common.lease import Fence, Lease, LeaseFenced
from services.messenger_gateway.identification.model import (
    IdempotentReplay,
    Identification,
    IdentificationNotFound,
    SameNumber,
    State,
    Verdict,
    hint_verify_key,
)
from services.messenger_gateway.identification.ports import GatewayStore, IdentificationTx
from services.messenger_gateway.identification.transitions import (
    Event,
    advance,
    answer_event,
    notice_event,
    wrong_code_event,
)
from services.messenger_gateway.notices.model import NoticeResult, TerminationNotice
from services.messenger_gateway.policy.model import PolicyChange
from services.messenger_gateway.routing.model import PortedNumber, RouteOrigin

# --- starting --------------------------------------------------------------------------------


# The delivery policy's change-log entries a write logged itself, with their versions, read in
# its own transaction (None: not asked for, no listener).
Changes = list[PolicyChange] | None


async def _mark(tx: IdentificationTx, wanted: bool) -> int | None:
    return await tx.log_mark() if wanted else None


async def _changes(tx: IdentificationTx, mark: int | None) -> Changes:
    """This transaction's own change-log entries (logged since mark); None when not asked."""
    return None if mark is None else await tx.own_policy_changes(mark)


@dataclass(frozen=True, slots=True)
class Started:
    new: Identification
    previous: Identification | None  # the user's previous identification, as it is now
    changes: Changes = None


def no_identification(user_id: str) -> IdentificationNotFound:
    return IdentificationNotFound(
        f"user {quote(user_id)} has no identification: use StartIdentification"
    )


def same_number() -> SameNumber:
    return SameNumber(
        "phone_number is the user's current number: give the new number, or use "
        "StartIdentification to identify the same number again"
    )


def check_number_change(current: Identification | None, user_id: str, phone: str) -> None:
    """ChangePhoneNumber's rule: the user has an identification, and the number differs."""
    if current is None:
        raise no_identification(user_id)
    if current.phone_number == phone:
        raise same_number()


async def replace_current(
    store: GatewayStore,
    new: Identification,
    *,
    now: datetime,
    change_number: bool,
    idempotency_key: str | None = None,
    with_changes: bool = False,
) -> Started:
    """`new` becomes the user's current identification and the previous one ends
    (NUMBER_CHANGED), in one transaction. change_number: check_number_change applies. With an
    idempotency key the user already started an identification with: IdempotentReplay.
    with_changes: the result carries the change-log entries the transaction logged."""

    async def replace(tx: IdentificationTx) -> Started:
        await tx.lock_user(new.user_id)
        mark = await _mark(tx, with_changes)
        if idempotency_key is not None:
            earlier = await tx.by_idempotency_key(new.user_id, idempotency_key)
            if earlier is not None:
                raise IdempotentReplay(earlier)
        previous = await tx.current(new.user_id)
        if change_number:
            check_number_change(previous, new.user_id, new.phone_number)
        if previous is not None:
            ended = advance(previous, Event.NUMBER_CHANGED, now=now)
            if ended is not None and await tx.compare_and_set(previous, ended):
                previous = ended
        await tx.insert(new, idempotency_key)
        return Started(new, previous, await _changes(tx, mark))

    return await store.run_grouped(replace)


# --- the one-time code -----------------------------------------------------------------------


_CONFIRM_ROUNDS = 8  # each lost round used an attempt or ended the code: far more than enough


class Confirmed(Enum):
    """What ConfirmPossession's transaction did."""

    NOT_FOUND = auto()
    WRONG_STATE = auto()  # not AWAITING_CODE, and never confirmed: nothing changed
    ALREADY_CONFIRMED = auto()  # the code was accepted before (a retry): nothing changed
    EXPIRED = auto()  # ended CODE_EXPIRED now
    WRONG_CODE = auto()  # an attempt used (ended TOO_MANY_ATTEMPTS at the last)
    VERIFYING = auto()  # the right code: VERIFYING, stored before the operator is asked


@dataclass(frozen=True, slots=True)
class Confirmation:
    outcome: Confirmed
    identification: Identification | None  # as it is after the transaction


async def confirm_code(
    store: GatewayStore,
    identification_id: str,
    *,
    now: datetime,
    matches: Callable[[str], bool],
    verify_key: str,
    deadline: datetime,
    lease: Lease,
) -> Confirmation:
    """Check the code (matches(code_hash)) against the identification and record the outcome,
    in one transaction: expired, a wrong code, or VERIFYING under verify_key until deadline,
    held by lease under a new lease token (the returned identification carries it)."""

    async def confirm(tx: IdentificationTx) -> Confirmation:
        # A lost compare-and-set (a concurrent confirm at another replica won) decides again
        # on the row as the winner left it: each wrong code uses its own attempt, and a right
        # code after another's shares its verification.
        for _ in range(_CONFIRM_ROUNDS):
            ident = await tx.get(identification_id)
            if ident is None:
                return Confirmation(Confirmed.NOT_FOUND, None)
            if ident.state is not State.AWAITING_CODE:
                if ident.verification_deadline is not None:
                    return Confirmation(Confirmed.ALREADY_CONFIRMED, ident)
                return Confirmation(Confirmed.WRONG_STATE, ident)
            if now >= ident.code_expires_at:
                event, outcome = Event.CODE_EXPIRED, Confirmed.EXPIRED
            elif not matches(ident.code_hash):
                event, outcome = wrong_code_event(ident), Confirmed.WRONG_CODE
            else:
                event, outcome = Event.VERIFICATION_BEGUN, Confirmed.VERIFYING
            begun = event is Event.VERIFICATION_BEGUN
            after = advance(
                ident,
                event,
                now=now,
                **({"verify_key": verify_key, "verification_deadline": deadline} if begun else {}),
            )
            assert after is not None  # AWAITING_CODE has a row for each of them
            if begun:  # taken: a new token fences off any earlier holder of the row
                after = replace(after, lease_holder=lease.holder, lease_token=ident.lease_token + 1)
            if await tx.compare_and_set(ident, after, lease=lease if begun else None):
                return Confirmation(outcome, after)
        return Confirmation(Confirmed.WRONG_STATE, await tx.get(identification_id))

    return await store.run_grouped(confirm)


async def begin_verification(
    store: GatewayStore,
    identification_id: str,
    *,
    verify_key: str,
    deadline: datetime,
    now: datetime,
    lease: Lease,
) -> bool:
    """AWAITING_CODE -> VERIFYING, while the code is valid, without checking a code (a
    verification set up directly: tests and tools)."""
    confirmation = await confirm_code(
        store,
        identification_id,
        now=now,
        matches=lambda _: True,
        verify_key=verify_key,
        deadline=deadline,
        lease=lease,
    )
    return confirmation.outcome is Confirmed.VERIFYING


# --- verification ----------------------------------------------------------------------------


def _check_fence(ident: Identification | None, fence: Fence | None) -> None:
    """A write by the replica verifying ident, whose lease another replica has taken since:
    LeaseFenced (the transaction changes nothing)."""
    if (
        fence is not None
        and ident is not None
        and not fence.admits(ident.lease_holder, ident.lease_token)
    ):
        raise LeaseFenced(fence)


async def _fenced_compare_and_set(
    tx: IdentificationTx, before: Identification, after: Identification, fence: Fence | None
) -> bool:
    """compare_and_set under fence; lost to a claim that came in meanwhile: LeaseFenced."""
    if await tx.compare_and_set(before, after, fence=fence):
        return True
    _check_fence(await tx.get(before.identification_id), fence)
    return False


def _verifying_under(
    ident: Identification | None, verify_key: str, now: datetime, within_window: bool
) -> bool:
    if ident is None or ident.state is not State.VERIFYING or ident.verify_key != verify_key:
        return False
    deadline = ident.verification_deadline
    return not within_window or (deadline is not None and deadline > now)


async def finish_verification(
    store: GatewayStore,
    identification_id: str,
    verify_key: str,
    *,
    event: Event,
    now: datetime,
    operator_id: str | None = None,
    identification_code: str | None = None,
    within_window: bool,
    with_changes: bool = False,
    fence: Fence | None = None,
) -> tuple[Identification, Changes] | None:
    """The verification's outcome (an answer's event, WINDOW_PASSED or NO_OPERATOR), only if
    still VERIFYING under verify_key (and, with within_window, before its deadline): the
    identification as recorded (with_changes: and the change-log entries it logged), None if
    nothing changed. An IDENTIFIED answer whose code a notice already ended becomes that
    notice's event (a termination wins). With fence (the verifying replica's lease on the row):
    LeaseFenced if another replica has taken the verification over since."""

    async def finish(tx: IdentificationTx) -> tuple[Identification, Changes] | None:
        ident = await tx.get(identification_id)
        _check_fence(ident, fence)
        if ident is None or not _verifying_under(ident, verify_key, now, within_window):
            return None
        mark = await _mark(tx, with_changes)
        step, code = event, identification_code
        changes: dict[str, object] = {}
        if operator_id is not None:
            changes["operator_id"] = operator_id
        if event is Event.ANSWER_IDENTIFIED and code is not None:
            ended = await tx.ended_by_notice(operator_id or ident.operator_id, code)
            step = answer_event(Verdict.IDENTIFIED, ended)
            if ended is None:
                changes["identification_code"] = code
        after = advance(ident, step, now=now, **changes)
        if after is None or not await _fenced_compare_and_set(tx, ident, after, fence):
            return None
        return after, await _changes(tx, mark)

    return await store.run_grouped(finish)


async def follow_hint(
    store: GatewayStore,
    identification_id: str,
    verify_key: str,
    *,
    recipient: str,
    donor: str,
    now: datetime,
    fence: Fence | None = None,
) -> Identification | None:
    """A donor answered "ported to recipient": remember the route (ported_numbers, origin
    hint) and move the verification to the recipient under the derived verify key, in one
    transaction; only if still VERIFYING under verify_key, within its window, and no hint was
    followed yet. The moved identification, or None. With fence: as finish_verification."""

    async def follow(tx: IdentificationTx) -> Identification | None:
        ident = await tx.get(identification_id)
        _check_fence(ident, fence)
        if not _verifying_under(ident, verify_key, now, within_window=True):
            return None
        assert ident is not None
        if ident.hinted_by is not None:
            return None
        after = advance(
            ident,
            Event.ANSWER_HINT,
            now=now,
            operator_id=recipient,
            verify_key=hint_verify_key(verify_key),
            hinted_by=donor,
        )
        if after is None or not await _fenced_compare_and_set(tx, ident, after, fence):
            return None
        await tx.remember_route(PortedNumber(ident.phone_number, recipient, now, RouteOrigin.HINT))
        return after

    return await store.run(follow)


async def expire_overdue(store: GatewayStore, now: datetime) -> list[str]:
    """Every VERIFYING identification past its deadline ends (WINDOW_PASSED); their ids."""

    async def expire(tx: IdentificationTx) -> list[str]:
        expired: list[str] = []
        for ident in await tx.overdue(now):
            after = advance(ident, Event.WINDOW_PASSED, now=now)
            if after is not None and await tx.compare_and_set(ident, after):
                expired.append(ident.identification_id)
        return expired

    return await store.run(expire)


# --- notices ---------------------------------------------------------------------------------


async def apply_notices(
    store: GatewayStore,
    messenger_id: str,
    notices: Sequence[tuple[TerminationNotice, bool]],
    *,
    now: datetime,
    fence: Fence | None = None,
) -> list[NoticeResult]:
    """In one transaction, for each (notice, revoke) in order: the event id into the inbox (a
    repeat, also within the batch, changes nothing); with revoke the notice ends its code (an
    answer recorded later cannot identify on it) and revokes the IDENTIFIED identifications
    with it; then the cursor advances to the last seq. Each result's cursor is the persisted
    cursor as of that notice. With fence (the consumer's lease): the last statement checks that
    the lease is still held under it, and holds it until the commit; when another replica has
    taken it, LeaseFenced and nothing of the batch is kept."""

    async def apply(tx: IdentificationTx) -> list[NoticeResult]:
        cursor = await tx.notice_cursor(messenger_id)
        results: list[NoticeResult] = []
        for notice, revoke in notices:
            applied = await tx.add_to_inbox(notice, ends_code=revoke, now=now)
            revoked = 0
            if applied and revoke:
                event = notice_event(notice.kind)
                for ident in await tx.identified_with_code(
                    notice.operator_id, notice.identification_code
                ):
                    after = advance(ident, event, now=now)
                    if after is not None and await tx.compare_and_set(ident, after):
                        revoked += 1
                if revoked:
                    await tx.set_inbox_revoked(notice.event_id, revoked)
            cursor = max(cursor, notice.seq)
            results.append(NoticeResult(applied=applied, revoked=revoked, cursor=cursor))
        if notices:
            await tx.advance_notice_cursor(messenger_id, cursor)
        failpoint("gateway.notice.before_commit")
        # last: the lease row stays locked only from here to the commit (a take waits that long)
        if fence is not None and not await tx.holds_lease(fence):
            raise LeaseFenced(fence)
        return results

    return await store.run(apply)
