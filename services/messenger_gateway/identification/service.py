"""The identification use cases: start, change number, confirm possession (the reads are
reads.py).

Each write is one transaction function of transactions.py (the state machine decides, the store
compare-and-sets); the verification itself runs in the background verifier (verifier.py).
An RPC logs one line (the server's `rpc` line): the use case binds the domain's fields to it
(identification_id, user_id, the masked number, operator, state, reason, ...).
"""

from __future__ import annotations

import asyncio
import uuid

from services.common.context import log_with_rpc, trace_id_now
from services.common.errors import InvalidInput, quote
from services.common.failpoints import async_failpoint
from services.common.logging import get_logger
from services.common.phone import mask
from services.common.ratelimit import KeyedTokenBucket, RateLimited
from services.common.timeutil import Clock, SystemClock
from services.messenger_gateway.identification import transactions
from services.messenger_gateway.identification.codes import CodeHasher, new_code
from services.messenger_gateway.identification.metrics import completed, started
from services.messenger_gateway.identification.model import (
    CodeExpired,
    IdempotencyKeyReused,
    IdempotentReplay,
    Identification,
    IdentificationNotFound,
    NumberNotServed,
    Reason,
    SmsMessage,
    SmsNotSent,
    State,
    WrongCode,
    validate_code_format,
    validate_idempotency_key,
    validate_user_id,
    wrong_state_error,
)
from services.messenger_gateway.identification.numbers import allowed_number
from services.messenger_gateway.identification.ports import (
    GatewayStore,
    IdentificationListener,
    NumberRouter,
    OperatorDirectory,
    SmsSender,
    tell,
)
from services.messenger_gateway.identification.settings import GatewaySettings
from services.messenger_gateway.identification.transactions import Confirmation, Confirmed
from services.messenger_gateway.identification.verifier import Outcome, Verifier

log = get_logger("idmesh.gateway")


class IdentificationService:
    def __init__(
        self,
        settings: GatewaySettings,
        *,
        store: GatewayStore,
        router: NumberRouter,
        sms: SmsSender,
        operators: OperatorDirectory,
        verifier: Verifier,
        code_hasher: CodeHasher,
        clock: Clock | None = None,
        listener: IdentificationListener | None = None,
    ) -> None:
        """listener: told each identification change this service commits (the delivery
        policy's index)."""
        self.settings = settings
        self._store = store
        self._router = router
        self._sms = sms
        self._operators = operators
        self._verifier = verifier
        self._clock = clock or SystemClock()
        self._hasher = code_hasher
        self._listener = listener
        self._limits = [
            (KeyedTokenBucket(limit), key, what)
            for limit, key, what in (
                (settings.otp_phone_limit, "phone", "one-time codes for this number"),
                (settings.otp_user_limit, "user", "one-time codes for this user"),
            )
            if limit is not None
        ]

    @property
    def messenger_id(self) -> str:
        return self.settings.messenger_id

    # --- starting ----------------------------------------------------------------------------

    async def start_identification(
        self, user_id: str, phone_number: str, *, idempotency_key: str = ""
    ) -> Identification:
        """Start identifying user_id by phone_number. With an idempotency key, a retry of the
        same call returns the identification the first one started (no second code)."""
        validate_user_id(user_id)
        key = validate_idempotency_key(idempotency_key)
        phone = allowed_number(phone_number, self.settings.allowed_countries)
        log_with_rpc(user_id=user_id, phone=mask(phone))
        try:
            new, _ = await self._start(user_id, phone, change_number=False, idempotency_key=key)
        except IdempotentReplay as replay:  # the user started one with this key before
            return self._replayed(replay.identification, phone)
        except (RateLimited, NumberNotServed):
            # refused before the transaction: a retry of a call that started one still gets it
            if key is not None:
                earlier = await self._store.by_idempotency_key(user_id, key)
                if earlier is not None:
                    return self._replayed(earlier, phone)
            raise
        return new

    def _replayed(self, earlier: Identification, phone: str) -> Identification:
        if earlier.phone_number != phone:
            raise IdempotencyKeyReused(
                "idempotency_key was already used by this user for another number: use a new "
                "key for every new identification"
            )
        log_with_rpc(
            identification_id=earlier.identification_id, state=earlier.state, replayed=True
        )
        return earlier

    async def change_phone_number(
        self, user_id: str, phone_number: str
    ) -> tuple[Identification, Identification]:
        """The current identification ends (NUMBER_CHANGED) and a new one starts for the new
        number. Returns (new, previous)."""
        validate_user_id(user_id)
        phone = allowed_number(phone_number, self.settings.allowed_countries)
        log_with_rpc(user_id=user_id, phone=mask(phone))
        new, previous = await self._start(user_id, phone, change_number=True)
        assert previous is not None  # replace_current(change_number=True) guarantees it
        return new, previous

    async def _start(
        self,
        user_id: str,
        phone: str,
        *,
        change_number: bool,
        idempotency_key: str | None = None,
    ) -> tuple[Identification, Identification | None]:
        if change_number:  # refuse early, before a code is made; the transaction checks again
            transactions.check_number_change(await self._store.current(user_id), user_id, phone)
        taken: list[tuple[KeyedTokenBucket, str]] = []
        for bucket, key, what in self._limits:
            bucket.acquire(phone if key == "phone" else user_id, what)
            taken.append((bucket, phone if key == "phone" else user_id))
        route = await self._router.resolve(phone)
        log_with_rpc(
            operator_id=route.operator_id, carrier=route.carrier, route_source=route.source
        )
        if route.operator_id is None or not self._operators.knows(route.operator_id):
            raise NumberNotServed(
                f"phone_number {mask(phone)} is served by "
                f"{route.operator_id or 'no known operator'}, which this messenger cannot ask: "
                "it cannot be identified here; no code was sent",
                metadata={"operator_id": route.operator_id or ""},
            )
        code = new_code()
        now = self._clock.now()
        new = Identification(
            identification_id=str(uuid.uuid4()),
            user_id=user_id,
            phone_number=phone,
            state=State.AWAITING_CODE,
            reason=Reason.UNSPECIFIED,
            operator_id=route.operator_id,
            started_at=now,
            code_expires_at=now + self.settings.otp_ttl,
            attempts_left=self.settings.otp_max_attempts,
            code_hash=self._hasher.hash(code),
            trace_id=trace_id_now(),
        )
        try:
            result = await transactions.replace_current(
                self._store,
                new,
                now=now,
                change_number=change_number,
                idempotency_key=idempotency_key,
                with_changes=self._listener is not None,
            )
        except IdempotentReplay:  # a retry: no code sent, the limits' tokens given back
            for bucket, held in taken:
                bucket.give_back(held)
            raise
        previous = result.previous
        await tell(self._listener, new, result.changes)
        if previous is not None:
            self._verifier.cancel(previous.identification_id)
        started(route.operator_id)
        log_with_rpc(
            identification_id=new.identification_id,
            state=new.state,
            replaced=previous.identification_id if previous else None,
            replaced_state=previous.state if previous else None,
        )
        minutes = max(1, round(self.settings.otp_ttl.total_seconds() / 60))
        message = SmsMessage(
            messenger_id=self.messenger_id,
            identification_id=new.identification_id,
            phone_number=phone,
            code=code,
            text=f"{code} is your {self.messenger_id} identification code. It expires in "
            f"{minutes} min. Do not tell it to anyone.",
        )
        try:
            await self._sms.send(message)
        except Exception as exc:
            log.error(
                "sms.send_failed",
                identification_id=new.identification_id,
                phone=mask(phone),
                error=type(exc).__name__,
            )
            raise SmsNotSent(
                f"the one-time code could not be sent to {mask(phone)}: start the "
                "identification again in a moment"
            ) from None
        return new, previous

    # --- possession --------------------------------------------------------------------------

    async def confirm_possession(
        self, identification_id: str, code: str, *, wait: float
    ) -> Identification:
        """Check the code; on the right one, start the verification and wait for its outcome
        at most `wait` seconds. Returns the identification as it then stands."""
        if not identification_id:
            raise InvalidInput(
                "identification_id is empty: give the id StartIdentification returned"
            )
        validate_code_format(code)
        log_with_rpc(identification_id=identification_id)
        # shielded: once VERIFYING is stored its task must start, even if this RPC is cancelled
        confirmation, task = await asyncio.shield(self._confirm(identification_id, code))
        ident = confirmation.identification
        match confirmation.outcome:
            case Confirmed.NOT_FOUND:
                raise _not_found(identification_id)
            case Confirmed.WRONG_STATE:
                if ident is None:
                    raise _not_found(identification_id)
                raise wrong_state_error(ident)
            case Confirmed.EXPIRED:
                completed(State.NOT_COMPLETED, Reason.CODE_EXPIRED)
                log_with_rpc(state=State.NOT_COMPLETED, reason=Reason.CODE_EXPIRED)
                raise CodeExpired(
                    "code expired; start again: call StartIdentification for a new code"
                )
            case Confirmed.WRONG_CODE:
                assert ident is not None
                raise self._wrong_code(ident)
        assert ident is not None
        log_with_rpc(
            trace_id=ident.trace_id,
            user_id=ident.user_id,
            operator_id=ident.operator_id or None,
            verification_deadline=(
                ident.verification_deadline.isoformat() if ident.verification_deadline else None
            ),
        )
        outcome = await self._await_outcome(ident, task, wait)
        log_with_rpc(state=outcome.state, reason=outcome.reason)
        return outcome

    async def _confirm(
        self, identification_id: str, code: str
    ) -> tuple[Confirmation, asyncio.Task[Outcome] | None]:
        """The code checked and its outcome stored in one transaction; on the right one the
        verification task started (stored first: a restart resumes it)."""
        now = self._clock.now()
        confirmation = await transactions.confirm_code(
            self._store,
            identification_id,
            now=now,
            matches=lambda stored: self._hasher.matches(code, stored),
            verify_key=uuid.uuid4().hex,
            deadline=now + self.settings.verification_window,
            lease=self._verifier.lease(now),
        )
        if confirmation.outcome is not Confirmed.VERIFYING:
            return confirmation, None
        await async_failpoint("gateway.verify.after_begin")
        assert confirmation.identification is not None
        return confirmation, self._verifier.spawn(confirmation.identification)

    def _wrong_code(self, after: Identification) -> WrongCode:
        log_with_rpc(attempts_left=after.attempts_left, state=after.state)
        if after.state is State.NOT_COMPLETED:
            completed(State.NOT_COMPLETED, after.reason)
            return WrongCode(
                "wrong code and no attempts left: the identification is NOT_COMPLETED; "
                "start again with StartIdentification",
                reason="TOO_MANY_ATTEMPTS",
                metadata={"attempts_left": 0},
            )
        left = after.attempts_left
        return WrongCode(
            f"wrong code; {left} attempt{'' if left == 1 else 's'} left: check the SMS and "
            "try again",
            metadata={"attempts_left": after.attempts_left},
        )

    async def _await_outcome(
        self, ident: Identification, task: asyncio.Task[Outcome] | None, wait: float
    ) -> Identification:
        """The identification after at most `wait` seconds of its verification: the task's
        own result when it ended here, ident while it still runs, else read from the store
        (it ran elsewhere or ended before)."""
        task = task or self._verifier.task_of(ident.identification_id)
        if task is not None:
            if wait > 0:
                await asyncio.wait({task}, timeout=wait)  # never cancels the task
            if not task.done():
                return ident
            if not task.cancelled() and task.exception() is None and task.result() is not None:
                ended = task.result()
                assert ended is not None
                return ended
        return await self._get(ident.identification_id)

    async def _get(self, identification_id: str) -> Identification:
        ident = await self._store.get(identification_id)
        if ident is None:
            raise _not_found(identification_id)
        return ident


def _not_found(identification_id: str) -> IdentificationNotFound:
    return IdentificationNotFound(
        f"identification {quote(identification_id)} does not exist: use the id "
        "StartIdentification returned"
    )
