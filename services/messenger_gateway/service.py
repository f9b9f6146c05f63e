"""The gateway's use cases: start, confirm possession, verify with the operator, access, notices.

Verification runs as a background task owned by the service (not by the RPC that started it), so
a cancelled RPC does not cancel it. Its state is stored before the operator is asked; a restart
resumes it (resume_pending) with the same VerifySubscriber idempotency key (verify_key), and each
task is its own watchdog: when the window ends it fails the identification OPERATOR_TIMEOUT,
whatever the operator is doing. With several replicas on one database each pending verification
is held by one replica under a lease (settings.lease_ttl) that it renews while it runs
(keep_verifications); when a replica dies, another claims the verifications it held once their
leases expire and resumes them, with the same verify_key; a replica that finds one of its
verifications taken by another stops its own. A shutdown releases them for the others at once.

The task runs under the identification's trace id (the request id of StartIdentification,
stored with it), so every VerifySubscriber call for it carries that id, after a restart too.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterable, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Protocol

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from services.common import tracing
from services.common.backoff import Backoff
from services.common.context import trace_id_now, traced
from services.common.errors import InvalidInput, quote
from services.common.failpoints import async_failpoint
from services.common.lease import Lease, default_replica_id
from services.common.logging import get_logger
from services.common.metrics import ScrapeCollector, registered
from services.common.phone import mask, parse_mobile, region_of
from services.common.ratelimit import KeyedTokenBucket, RateLimit
from services.common.timeutil import Clock, SystemClock
from services.messenger_gateway.domain import (
    Access,
    AgreementMissing,
    CodeExpired,
    CodeHasher,
    CountryNotAllowed,
    IdempotencyKeyReused,
    IdempotentReplay,
    Identification,
    IdentificationNotFound,
    ImportOutcome,
    NeverIdentified,
    NoticeResult,
    NumberNotServed,
    OperatorAnswer,
    OperatorRefused,
    OperatorUnavailable,
    OperatorUnreachable,
    PortedNumber,
    Reason,
    Reassignment,
    ReassignmentCheck,
    RowError,
    SameNumber,
    SmsNotSent,
    State,
    TerminationKind,
    TerminationNotice,
    Verdict,
    WrongCode,
    decide_access,
    hint_verify_key,
    new_code,
    validate_code_format,
    validate_idempotency_key,
    validate_user_id,
    wrong_state_error,
)
from services.messenger_gateway.ported import (
    MAX_ROW_ERRORS,
    MAX_ROWS_PER_BATCH,
    PortedRowInput,
    validate_row,
)
from services.messenger_gateway.ports import GatewayStore
from services.messenger_gateway.routing import Route

log = get_logger("idmesh.gateway")

IDENTIFICATIONS_STARTED = Counter(
    "idmesh_gateway_identifications_started",
    "Identifications started (a one-time code sent), by the operator the number routes to "
    "(none: no configured operator).",
    ["operator_id"],
)
IDENTIFICATIONS_COMPLETED = Counter(
    "idmesh_gateway_identifications_completed",
    "Identifications ended, by outcome (identified, not_completed) and reason (none for "
    "identified; no_subscriber, operator_timeout, no_operator, agreement_refused, code_expired, "
    "too_many_attempts).",
    ["outcome", "reason"],
)
VERIFICATION_SECONDS = Histogram(
    "idmesh_gateway_verification_duration_seconds",
    "From possession confirmed (VERIFYING) to the verification's outcome; the window is "
    "idmesh_gateway_verification_window_seconds (20 minutes by law).",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 900, 1200),
)
IDENTIFICATIONS_REVOKED = Counter(
    "idmesh_gateway_identifications_revoked",
    "Identifications revoked by termination notices, by reason (contract_terminated, ported_out).",
    ["reason"],
)
NOTICES = Counter(
    "idmesh_gateway_notices",
    "Termination notices taken from the notifier, by result (applied, duplicate).",
    ["result"],
)


def _completed(state: State, reason: Reason) -> None:
    outcome = "identified" if state is State.IDENTIFIED else "not_completed"
    label = "none" if reason is Reason.UNSPECIFIED else reason.value.lower()
    IDENTIFICATIONS_COMPLETED.labels(outcome=outcome, reason=label).inc()


# --- ports -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SmsMessage:
    messenger_id: str
    identification_id: str
    phone_number: str
    code: str = field(repr=False)
    text: str = field(repr=False)


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


@dataclass(frozen=True, slots=True)
class PortedBatch:
    """One message of a ported-numbers import stream."""

    all_or_nothing: bool
    rows: Sequence[PortedRowInput]


@dataclass(frozen=True, slots=True)
class ResolvedRoute:
    phone_number: str
    route: Route
    configured: bool  # the gateway has the operator's registry address


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    messenger_id: str
    verification_window: timedelta = timedelta(minutes=20)
    otp_ttl: timedelta = timedelta(minutes=5)
    otp_max_attempts: int = 5
    verify_retry: Backoff = field(default_factory=lambda: Backoff(initial=0.2, maximum=10.0))
    # One-time codes per phone number and per user (code flooding, SMS pumping); None: no limit.
    otp_phone_limit: RateLimit | None = None
    otp_user_limit: RateLimit | None = None
    # ISO 3166 regions whose numbers may be identified (IDMESH_ALLOWED_COUNTRIES); empty: any.
    allowed_countries: frozenset[str] = frozenset({"RU"})
    # This replica's id, the holder of the leases of the verifications it runs, and their term
    # (renewed every third of it; another replica resumes a dead one's after it).
    replica_id: str = field(default_factory=lambda: default_replica_id(single=False))
    lease_ttl: timedelta = timedelta(seconds=6)


# --- the service -----------------------------------------------------------------------------


class GatewayService:
    def __init__(
        self,
        settings: GatewaySettings,
        *,
        store: GatewayStore,
        router: NumberRouter,
        sms: SmsSender,
        operators: OperatorDirectory,
        clock: Clock | None = None,
        code_hasher: CodeHasher,
        on_identification_change: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        """on_identification_change: awaited after a write that may change whether a user is
        known or IDENTIFIED (the delivery policy's index catches up from the store)."""
        self.settings = settings
        self._on_identification_change = on_identification_change
        self._store = store
        self._router = router
        self._sms = sms
        self._operators = operators
        self._clock = clock or SystemClock()
        self._hasher = code_hasher
        self._limits = [
            (KeyedTokenBucket(limit), key, what)
            for limit, key, what in (
                (settings.otp_phone_limit, "phone", "one-time codes for this number"),
                (settings.otp_user_limit, "user", "one-time codes for this user"),
            )
            if limit is not None
        ]
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._closed = False

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
        phone = self._allowed_number(phone_number)
        if key is not None:
            earlier = await self._store.by_idempotency_key(user_id, key)
            if earlier is not None:
                return self._replayed(earlier, phone)
        try:
            new, _ = await self._start(user_id, phone, change_number=False, idempotency_key=key)
        except IdempotentReplay as replay:  # a concurrent call with the same key won
            return self._replayed(replay.identification, phone)
        return new

    def _replayed(self, earlier: Identification, phone: str) -> Identification:
        if earlier.phone_number != phone:
            raise IdempotencyKeyReused(
                "idempotency_key was already used by this user for another number: use a new "
                "key for every new identification"
            )
        log.info(
            "identification.replayed",
            identification_id=earlier.identification_id,
            state=earlier.state,
        )
        return earlier

    async def change_phone_number(
        self, user_id: str, phone_number: str
    ) -> tuple[Identification, Identification]:
        """The current identification ends (NUMBER_CHANGED) and a new one starts for the new
        number. Returns (new, previous)."""
        validate_user_id(user_id)
        phone = self._allowed_number(phone_number)
        new, previous = await self._start(user_id, phone, change_number=True)
        assert previous is not None  # replace_current(change_number=True) guarantees it
        return new, previous

    def _allowed_number(self, phone_number: str) -> str:
        """The number in E.164: a valid mobile number of an allowed country."""
        phone = parse_mobile(phone_number)
        allowed = self.settings.allowed_countries
        region = region_of(phone)
        if allowed and region not in allowed:
            raise CountryNotAllowed(
                f"phone_number {mask(phone)} is a number of {region or 'no country'}: this "
                f"messenger identifies numbers of {', '.join(sorted(allowed))} only",
                metadata={"country": region},
            )
        return phone

    async def _start(
        self,
        user_id: str,
        phone: str,
        *,
        change_number: bool,
        idempotency_key: str | None = None,
    ) -> tuple[Identification, Identification | None]:
        if change_number:  # refuse early, before a code is made; the transaction checks again
            current = await self._store.current(user_id)
            if current is None:
                raise IdentificationNotFound(
                    f"user {quote(user_id)} has no identification: use StartIdentification"
                )
            if current.phone_number == phone:
                raise SameNumber(
                    "phone_number is the user's current number: give the new number, or use "
                    "StartIdentification to identify the same number again"
                )
        for bucket, key, what in self._limits:
            bucket.acquire(phone if key == "phone" else user_id, what)
        route = await self._router.resolve(phone)
        if route.operator_id is None or not self._operators.knows(route.operator_id):
            log.info(
                "identification.number_not_served",
                user_id=user_id,
                phone=mask(phone),
                operator_id=route.operator_id,
                carrier=route.carrier,
                route_source=route.source,
            )
            raise NumberNotServed(
                f"phone_number {mask(phone)} is served by "
                f"{route.operator_id or 'no known operator'}, which this messenger cannot ask: "
                "it cannot be identified here; no code was sent",
                metadata={"operator_id": route.operator_id or ""},
            )
        code = new_code()
        code_hash = self._hasher.hash(code)
        now = self._clock.now()
        new = Identification(
            identification_id=str(uuid.uuid4()),
            user_id=user_id,
            phone_number=phone,
            state=State.AWAITING_CODE,
            reason=Reason.UNSPECIFIED,
            operator_id=route.operator_id or "",
            started_at=now,
            code_expires_at=now + self.settings.otp_ttl,
            attempts_left=self.settings.otp_max_attempts,
            code_hash=code_hash,
            trace_id=trace_id_now(),
        )
        previous = await self._store.replace_current(
            new, now=now, change_number=change_number, idempotency_key=idempotency_key
        )
        await self._identification_changed()
        if previous is not None:
            self._cancel(previous.identification_id)
        IDENTIFICATIONS_STARTED.labels(operator_id=route.operator_id or "none").inc()
        log.info(
            "identification.started",
            identification_id=new.identification_id,
            user_id=user_id,
            phone=mask(phone),
            operator_id=new.operator_id or None,
            carrier=route.carrier,
            route_source=route.source,
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
        ident = await self._get(identification_id)
        if ident.state is not State.AWAITING_CODE:
            if ident.verification_deadline is not None:  # a retry after the code was accepted
                return await self._await_outcome(identification_id, wait)
            raise wrong_state_error(ident)
        now = self._clock.now()
        if now >= ident.code_expires_at:
            if await self._store.expire_code(identification_id, now):
                _completed(State.NOT_COMPLETED, Reason.CODE_EXPIRED)
            log.info("identification.code_expired", identification_id=identification_id)
            raise CodeExpired("code expired; start again: call StartIdentification for a new code")
        if not self._hasher.matches(code, ident.code_hash):
            after = await self._store.record_wrong_code(identification_id, now)
            if after is None:
                raise wrong_state_error(await self._get(identification_id))
            log.info(
                "identification.wrong_code",
                identification_id=identification_id,
                attempts_left=after.attempts_left,
            )
            if after.state is State.NOT_COMPLETED:
                _completed(State.NOT_COMPLETED, after.reason)
                raise WrongCode(
                    "wrong code and no attempts left: the identification is NOT_COMPLETED; "
                    "start again with StartIdentification",
                    reason="TOO_MANY_ATTEMPTS",
                    metadata={"attempts_left": 0},
                )
            left = after.attempts_left
            raise WrongCode(
                f"wrong code; {left} attempt{'' if left == 1 else 's'} left: check the SMS and "
                "try again",
                metadata={"attempts_left": after.attempts_left},
            )
        # shielded: once VERIFYING is stored its task must start, even if this RPC is cancelled
        if not await asyncio.shield(self._begin_verification(ident, now)):
            current = await self._get(identification_id)
            if current.verification_deadline is None:  # not confirmed: the code ended first
                raise wrong_state_error(current)
            # else a concurrent confirm won: share its wait
        return await self._await_outcome(identification_id, wait)

    async def _begin_verification(self, ident: Identification, now: datetime) -> bool:
        """AWAITING_CODE -> VERIFYING (stored first), then the verification task. False if a
        concurrent call changed the state first."""
        verify_key = uuid.uuid4().hex
        deadline = now + self.settings.verification_window
        if not await self._store.begin_verification(
            ident.identification_id,
            verify_key=verify_key,
            deadline=deadline,
            now=now,
            lease=self._lease(now),
        ):
            return False
        await async_failpoint("gateway.verify.after_begin")
        log.info(
            "identification.possession_confirmed",
            identification_id=ident.identification_id,
            trace_id=ident.trace_id,
            operator_id=ident.operator_id or None,
            verification_deadline=deadline.isoformat(),
        )
        self._spawn(
            replace(
                ident,
                state=State.VERIFYING,
                verify_key=verify_key,
                verification_deadline=deadline,
                code_hash="",
            )
        )
        return True

    async def _await_outcome(self, identification_id: str, wait: float) -> Identification:
        task = self._tasks.get(identification_id)
        if task is not None and wait > 0:
            await asyncio.wait({task}, timeout=wait)  # never cancels the task
        return await self._get(identification_id)

    # --- verification ------------------------------------------------------------------------

    async def resume_pending(self) -> tuple[int, int]:
        """At start: fail the VERIFYING identifications whose window has passed, and resume
        the others nobody holds (same verify_key and trace id, so the registry answers
        idempotently); those this replica id held before a restart first. Returns (resumed,
        failed)."""
        await self._store.release_verifications(self.settings.replica_id)
        failed = await self.expire_overdue(on="resume")
        resumed = await self._claim()
        log.info("verification.resumed", resumed=resumed, failed=failed)
        return resumed, failed

    async def keep_verifications(self) -> tuple[int, int]:
        """Renew the leases of the verifications this replica runs, stop those another replica
        has taken, and resume the ones nobody holds (a dead replica's, once their leases
        expired). Returns (resumed, stopped)."""
        running = list(self._tasks)
        lost = await self._store.renew_verifications(self._lease(self._clock.now()), running)
        for identification_id in lost:
            log.warning(
                "verification.lease_lost",
                identification_id=identification_id,
                replica=self.settings.replica_id,
                action="stopped here; the replica that took it goes on",
            )
            self._cancel(identification_id)
        return await self._claim(), len(lost)

    async def _claim(self) -> int:
        if self._closed:  # shutting down: leave them to the others
            return 0
        now = self._clock.now()
        claimed = await self._store.claim_verifications(self._lease(now), now=now)
        resumed = 0
        for ident in claimed:
            if ident.identification_id in self._tasks or ident.verify_key is None:
                continue
            self._spawn(ident)
            resumed += 1
            log.info(
                "verification.claimed",
                identification_id=ident.identification_id,
                trace_id=ident.trace_id,
                replica=self.settings.replica_id,
                verification_deadline=(
                    ident.verification_deadline.isoformat() if ident.verification_deadline else None
                ),
            )
        return resumed

    def _lease(self, now: datetime) -> Lease:
        return Lease(self.settings.replica_id, now + self.settings.lease_ttl)

    async def expire_overdue(self, *, on: str = "watchdog") -> int:
        """Fail every VERIFYING identification whose window has passed, whoever holds it (a
        replica sharing the database may have died mid-verification). Each is failed, counted
        and logged by one replica: the store's conditional UPDATE returns it to one caller."""
        expired = await self._store.expire_overdue(self._clock.now())
        for identification_id in expired:
            self._cancel(identification_id)
            _completed(State.NOT_COMPLETED, Reason.OPERATOR_TIMEOUT)
            log.info(
                "identification.finished",
                identification_id=identification_id,
                state=State.NOT_COMPLETED,
                reason=Reason.OPERATOR_TIMEOUT,
                on=on,
            )
        return len(expired)

    async def run_watchdog(self, interval: float) -> None:
        """keep_verifications() and expire_overdue() every interval seconds (at most a third
        of the lease term), until cancelled; meanwhile the pending verifications are metrics
        (read from the store at scrape time)."""
        with registered(ScrapeCollector("gateway_verifications", self.verification_metrics)):
            while True:
                await asyncio.sleep(interval)
                for job in (self.keep_verifications, self.expire_overdue):
                    try:
                        await job()
                    except Exception:
                        log.exception("verification.watchdog_failed", job=job.__name__)

    async def verification_metrics(self) -> list[Metric]:
        pending, first_deadline = await self._store.verifying_summary()
        window = self.settings.verification_window
        age = 0.0
        if first_deadline is not None:
            age = max(0.0, (self._clock.now() - (first_deadline - window)).total_seconds())
        return [
            GaugeMetricFamily(
                "idmesh_gateway_pending_verifications",
                "Identifications VERIFYING: possession confirmed, the operator's answer awaited.",
                value=pending,
            ),
            GaugeMetricFamily(
                "idmesh_gateway_oldest_pending_verification_age_seconds",
                "How long the oldest pending verification has waited (0 when none); it ends "
                "OPERATOR_TIMEOUT at idmesh_gateway_verification_window_seconds.",
                value=age,
            ),
            GaugeMetricFamily(
                "idmesh_gateway_verifications_running",
                "Pending verifications this replica runs (holds the lease of); the others' "
                "are theirs.",
                value=len(self._tasks),
            ),
            GaugeMetricFamily(
                "idmesh_gateway_verification_window_seconds",
                "The verification window (IDMESH_VERIFICATION_WINDOW_SECONDS; 20 minutes by law).",
                value=window.total_seconds(),
            ),
        ]

    def _observe_verification(self, ident: Identification) -> None:
        if ident.verification_deadline is not None:
            began = ident.verification_deadline - self.settings.verification_window
            VERIFICATION_SECONDS.observe(max(0.0, (self._clock.now() - began).total_seconds()))

    def _spawn(self, ident: Identification) -> None:
        if self._closed:  # shutting down: the row stays VERIFYING for the next start
            return
        identification_id = ident.identification_id
        task = asyncio.create_task(self._verify_traced(ident), name=f"verify-{identification_id}")
        self._tasks[identification_id] = task

        def forget(done: asyncio.Task[None]) -> None:
            if self._tasks.get(identification_id) is done:
                del self._tasks[identification_id]
            if not done.cancelled() and done.exception() is not None:
                log.error(
                    "verification.task_failed",
                    identification_id=identification_id,
                    exc_info=done.exception(),
                )

        task.add_done_callback(forget)

    def _cancel(self, identification_id: str) -> None:
        task = self._tasks.get(identification_id)
        if task is not None:
            task.cancel()

    def _remaining(self, ident: Identification) -> float:
        assert ident.verification_deadline is not None
        return (ident.verification_deadline - self._clock.now()).total_seconds()

    async def _verify_traced(self, ident: Identification) -> None:
        with traced(ident.trace_id, span="verification", identification_id=ident.identification_id):
            await self._verify(ident)

    async def _verify(self, ident: Identification) -> None:
        """Ask the operator until it answers or the window ends; then make sure the
        identification is not left VERIFYING. A donor's "ported to X" hint is followed once,
        within the same window (see _follow_hint). Cancellation (shutdown, replacement) leaves
        the row for resume_pending or for whoever replaced it."""
        if not ident.operator_id or not self._operators.knows(ident.operator_id):
            await self._finish_for_sure(ident, Reason.NO_OPERATOR)
            return
        current: Identification | None = ident
        try:
            async with asyncio.timeout(max(self._remaining(ident), 0.0)):
                while current is not None:
                    ident = current
                    current = await self._ask_operator(ident)
        except TimeoutError:
            ident = await self._latest_hop(ident)
        await self._finish_for_sure(ident, Reason.OPERATOR_TIMEOUT)

    async def _latest_hop(self, ident: Identification) -> Identification:
        """The window ended, maybe just as a hint's move to the recipient was committed: finish
        the identification under the verify_key it now has."""
        if ident.hinted_by is not None:
            return ident
        try:
            stored = await self._store.get(ident.identification_id)
        except Exception:
            log.exception("verification.reread_failed", identification_id=ident.identification_id)
            return ident
        if stored is not None and stored.state is State.VERIFYING and stored.hinted_by:
            return stored
        return ident

    async def _ask_operator(self, ident: Identification) -> Identification | None:
        """Ask ident's operator until it answers (recorded) or the window ends. Returns the
        identification moved to a recipient operator when the answer was a hint to follow."""
        assert ident.verify_key is not None
        delays = self.settings.verify_retry.delays()
        attempt = 0
        while (remaining := self._remaining(ident)) > 0:
            attempt += 1
            asked = 0.0  # the operator's RetryInfo, when it shed or rate-limited the call
            try:
                answer = await self._operators.verify(
                    ident.operator_id,
                    idempotency_key=ident.verify_key,
                    phone_number=ident.phone_number,
                    time_limit=remaining,
                )
                await async_failpoint("gateway.verify.after_answer")  # answered, not yet recorded
                if self._hint_to_follow(ident, answer):
                    return await self._follow_hint(ident, answer.recipient_operator_id)
                await self._record(ident, answer)
                return None
            except OperatorUnavailable as exc:
                asked = exc.retry_after
                log.warning(
                    "verification.operator_unavailable",
                    identification_id=ident.identification_id,
                    operator_id=ident.operator_id,
                    attempt=attempt,
                    error=str(exc),
                )
            except Exception:
                log.exception(
                    "verification.attempt_failed",
                    identification_id=ident.identification_id,
                    attempt=attempt,
                )
            current = await self._store.get(ident.identification_id)
            if current is None or current.state is not State.VERIFYING:
                return None  # ended elsewhere (replaced, another gateway process)
            wait = max(next(delays), asked)
            await asyncio.sleep(min(wait, max(self._remaining(ident), 0.0)))
        return None

    def _hint_to_follow(self, ident: Identification, answer: OperatorAnswer) -> bool:
        """A NO_SUBSCRIBER naming a recipient is followed once per verification: a second hint
        (from the recipient) is not, so two operators naming each other cannot loop."""
        recipient = answer.recipient_operator_id
        if answer.verdict is not Verdict.NO_SUBSCRIBER or not recipient:
            return False
        if ident.hinted_by is not None or recipient == ident.operator_id:
            log.info(
                "verification.hint_not_followed",
                identification_id=ident.identification_id,
                operator_id=ident.operator_id,
                recipient_operator_id=recipient,
                why="a hint was already followed" if ident.hinted_by else "names itself",
            )
            return False
        return True

    async def _follow_hint(self, ident: Identification, recipient: str) -> Identification | None:
        """The donor says the number was ported to `recipient`: remember the route and move the
        verification there (stored first: a restart resumes at the recipient with the derived
        verify_key), or end it NO_OPERATOR when this messenger has no registry for the
        recipient. Returns the moved identification to ask, or None when it has ended."""
        assert ident.verify_key is not None
        now = self._clock.now()
        if not self._operators.knows(recipient):
            await self._store.remember_hint(ident.phone_number, recipient, now)
            log.info(
                "verification.hint_to_unconfigured_operator",
                identification_id=ident.identification_id,
                operator_id=ident.operator_id,
                recipient_operator_id=recipient,
            )
            if await self._store.finish_verification(
                ident.identification_id,
                ident.verify_key,
                state=State.NOT_COMPLETED,
                reason=Reason.NO_OPERATOR,
                now=now,
                operator_id=recipient,
                within_window=True,
            ):
                _completed(State.NOT_COMPLETED, Reason.NO_OPERATOR)
                log.info(
                    "identification.finished",
                    identification_id=ident.identification_id,
                    state=State.NOT_COMPLETED,
                    reason=Reason.NO_OPERATOR,
                    operator_id=recipient,
                )
            return None
        if not await self._store.follow_hint(
            ident.identification_id,
            ident.verify_key,
            recipient=recipient,
            donor=ident.operator_id,
            now=now,
        ):
            # Another task (a second gateway process resuming it) may have moved it already.
            current = await self._store.get(ident.identification_id)
            if current is not None and current.state is State.VERIFYING and current.hinted_by:
                return current
            return None
        log.info(
            "verification.following_hint",
            identification_id=ident.identification_id,
            donor_operator_id=ident.operator_id,
            recipient_operator_id=recipient,
            phone=mask(ident.phone_number),
        )
        return replace(
            ident,
            operator_id=recipient,
            verify_key=hint_verify_key(ident.verify_key),
            hinted_by=ident.operator_id,
        )

    async def _record(self, ident: Identification, answer: OperatorAnswer) -> None:
        assert ident.verify_key is not None
        if answer.verdict is Verdict.TIMED_OUT:
            return  # the caller fails it OPERATOR_TIMEOUT
        if answer.verdict is Verdict.IDENTIFIED:
            operator_id = answer.operator_id or ident.operator_id
            if operator_id != ident.operator_id:
                log.warning(
                    "verification.operator_id_differs",
                    identification_id=ident.identification_id,
                    routed=ident.operator_id,
                    answered=operator_id,
                )
            state, reason = State.IDENTIFIED, Reason.UNSPECIFIED
            code: str | None = answer.identification_code
        else:
            operator_id, code = ident.operator_id, None
            state = State.NOT_COMPLETED
            reason = (
                Reason.NO_SUBSCRIBER
                if answer.verdict is Verdict.NO_SUBSCRIBER
                else Reason.AGREEMENT_REFUSED
            )
        recorded = await self._store.finish_verification(
            ident.identification_id,
            ident.verify_key,
            state=state,
            reason=reason,
            now=self._clock.now(),
            operator_id=operator_id,
            identification_code=code,
            within_window=True,
        )
        if recorded:
            state, reason = recorded
            await self._identification_changed()
            _completed(state, reason)
            self._observe_verification(ident)
            log.info(
                "identification.finished",
                identification_id=ident.identification_id,
                state=state,
                reason=reason,
                operator_id=operator_id,
                answered=answer.verdict,
            )
        else:
            log.warning(
                "verification.answer_ignored",
                identification_id=ident.identification_id,
                verdict=answer.verdict,
                why="the window had passed or the identification had already ended",
            )

    async def _finish_for_sure(self, ident: Identification, reason: Reason) -> None:
        """VERIFYING -> NOT_COMPLETED(reason) if still VERIFYING, retrying a failed write."""
        assert ident.verify_key is not None
        delays = self.settings.verify_retry.delays()
        while True:
            try:
                if await self._store.finish_verification(
                    ident.identification_id,
                    ident.verify_key,
                    state=State.NOT_COMPLETED,
                    reason=reason,
                    now=self._clock.now(),
                    within_window=False,
                ):
                    _completed(State.NOT_COMPLETED, reason)
                    self._observe_verification(ident)
                    log.info(
                        "identification.finished",
                        identification_id=ident.identification_id,
                        state=State.NOT_COMPLETED,
                        reason=reason,
                        operator_id=ident.operator_id or None,
                    )
                return
            except Exception:
                log.exception(
                    "verification.finish_failed", identification_id=ident.identification_id
                )
                await asyncio.sleep(next(delays))

    async def _identification_changed(self) -> None:
        if self._on_identification_change is None:
            return
        try:
            await self._on_identification_change()
        except Exception:  # committed already; the policy's tailer catches up on its own
            log.exception("identification.change_listener_failed")

    async def close(self) -> None:
        """Cancel the verification tasks; their rows stay VERIFYING, released for another
        replica (or the next start) to resume at once."""
        self._closed = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            released = await self._store.release_verifications(self.settings.replica_id)
        except Exception as exc:  # they expire instead
            log.warning("verification.release_failed", error=repr(exc))
        else:
            if released:
                log.info("verification.released", count=released)

    # --- reading -----------------------------------------------------------------------------

    async def get_identification(self, user_id: str) -> Identification:
        validate_user_id(user_id)
        current = await self._store.current(user_id)
        if current is None:
            raise IdentificationNotFound(
                f"user {quote(user_id)} has no identification: start one with StartIdentification"
            )
        return current

    async def check_access(self, user_id: str) -> Access:
        validate_user_id(user_id)
        return decide_access(user_id, await self._store.current(user_id))

    async def check_number_reassigned(
        self, user_id: str, *, time_limit: float = 10.0
    ) -> ReassignmentCheck:
        """Ask the operator that identified the user's current identification whether the
        number changed hands after the identification (for dormant accounts)."""
        validate_user_id(user_id)
        current = await self._store.current(user_id)
        if current is None:
            raise IdentificationNotFound(
                f"user {quote(user_id)} has no identification: start one with StartIdentification"
            )
        since = current.identified_at
        if current.state not in (State.IDENTIFIED, State.REVOKED) or since is None:
            raise NeverIdentified(
                f"user {quote(user_id)}'s current identification {current.identification_id} is "
                f"{current.state} and was never IDENTIFIED: there is no identification to ask "
                "about; finish identifying the user first"
            )
        operator_id = current.operator_id
        if not self._operators.knows(operator_id):
            raise OperatorUnreachable(
                f"operator {operator_id!r}, which identified user {quote(user_id)}, is not "
                "configured at this gateway (IDMESH_OPERATORS): it cannot be asked"
            )
        try:
            answer = await self._operators.check_reassigned(
                operator_id, phone_number=current.phone_number, since=since, time_limit=time_limit
            )
        except OperatorUnavailable as exc:
            raise OperatorUnreachable(
                f"operator {operator_id} could not be asked whether {mask(current.phone_number)} "
                f"changed hands ({exc}): try again later"
            ) from None
        except OperatorRefused:
            raise AgreementMissing(
                f"operator {operator_id} refused: it has no active identification agreement "
                "with this messenger"
            ) from None
        log.info(
            "reassignment.checked",
            user_id=user_id,
            operator_id=operator_id,
            phone=mask(current.phone_number),
            since=since.isoformat(),
            reassignment=answer,
        )
        return ReassignmentCheck(answer, since, operator_id, current.phone_number)

    # --- routing and the ported-numbers table ------------------------------------------------

    async def resolve_operator(self, phone_number: str) -> ResolvedRoute:
        phone = parse_mobile(phone_number)
        route = await self._router.resolve(phone)
        configured = bool(route.operator_id) and self._operators.knows(route.operator_id or "")
        return ResolvedRoute(phone, route, configured)

    async def import_ported_numbers(self, batches: AsyncIterable[PortedBatch]) -> ImportOutcome:
        """Check every row; stage the valid ones; when the stream ends store them (a number
        already in the table only with a later porting date), unless all_or_nothing (the first
        batch's) and a row was invalid. Nothing is stored if the stream fails."""
        import_id = uuid.uuid4().hex
        all_or_nothing: bool | None = None
        rejected = valid = 0
        errors: list[RowError] = []
        try:
            async for batch in batches:
                if all_or_nothing is None:
                    all_or_nothing = batch.all_or_nothing
                if len(batch.rows) > MAX_ROWS_PER_BATCH:
                    raise InvalidInput(
                        f"a batch has {len(batch.rows)} rows: send at most {MAX_ROWS_PER_BATCH} "
                        "rows per message",
                        field="rows",
                    )
                now = self._clock.now()
                good: list[tuple[int, PortedNumber]] = []
                for row in batch.rows:
                    try:
                        good.append((row.line, validate_row(row, now=now)))
                    except InvalidInput as exc:
                        rejected += 1
                        if len(errors) < MAX_ROW_ERRORS:
                            errors.append(RowError(row.line, exc.message))
                if good and not (all_or_nothing and rejected):
                    await self._store.stage_ported(import_id, good)
                valid += len(good)
            if all_or_nothing and rejected:
                outcome = ImportOutcome(0, rejected, tuple(errors), committed=False)
            else:
                imported = await self._store.commit_ported(import_id, self._clock.now())
                outcome = ImportOutcome(
                    imported, rejected, tuple(errors), committed=True, unchanged=valid - imported
                )
        finally:
            await asyncio.shield(self._store.discard_ported(import_id))
        log.info(
            "ported_numbers.imported",
            imported=outcome.imported,
            unchanged=outcome.unchanged,
            rejected=outcome.rejected,
            committed=outcome.committed,
            all_or_nothing=bool(all_or_nothing),
        )
        return outcome

    async def _get(self, identification_id: str) -> Identification:
        ident = await self._store.get(identification_id)
        if ident is None:
            raise IdentificationNotFound(
                f"identification {quote(identification_id)} does not exist: use the id "
                "StartIdentification returned"
            )
        return ident

    # --- notices -----------------------------------------------------------------------------

    async def notice_cursor(self) -> int:
        return await self._store.notice_cursor(self.messenger_id)

    async def apply_notice(self, notice: TerminationNotice) -> NoticeResult:
        """apply_notices of one notice."""
        [result] = await self.apply_notices([notice])
        return result

    async def apply_notices(self, notices: Sequence[TerminationNotice]) -> list[NoticeResult]:
        """Apply a stream message's notices in order, in one transaction, each once (the inbox
        keeps event ids, so a repeat, even within the batch, changes nothing): revoke the
        IDENTIFIED identifications with its operator and identification code; advance the
        cursor. One log line per batch at info (counts, seqs, event and trace ids), one per
        notice at debug."""
        batch: list[tuple[TerminationNotice, bool]] = []
        for notice in notices:
            ours = notice.messenger_id == self.messenger_id
            if not ours:
                log.error(
                    "notice.other_messenger",
                    seq=notice.seq,
                    event_id=notice.event_id,
                    notice_messenger_id=notice.messenger_id,
                )
            batch.append((notice, ours))
        if not batch:
            return []
        started = time.time_ns()
        results = await self._store.apply_notices(self.messenger_id, batch, now=self._clock.now())
        applied = revoked = 0
        for notice, result in zip(notices, results, strict=True):
            tracing.record(
                "notice.apply", notice.trace_id, started, seq=notice.seq, revoked=result.revoked
            )
            applied += result.applied
            if result.revoked:
                revoked += result.revoked
                ported = notice.kind is TerminationKind.PORTED_OUT
                reason = "ported_out" if ported else "contract_terminated"
                IDENTIFICATIONS_REVOKED.labels(reason=reason).inc(result.revoked)
            log.debug(  # a no-op unless the level is debug (a filtering logger)
                "notice.applied" if result.applied else "notice.duplicate",
                seq=notice.seq,
                event_id=notice.event_id,
                trace_id=notice.trace_id,
                operator_id=notice.operator_id,
                kind=notice.kind,
                revoked=result.revoked,
            )
        NOTICES.labels(result="applied").inc(applied)
        NOTICES.labels(result="duplicate").inc(len(results) - applied)
        if revoked:
            await self._identification_changed()
        log.info(
            "notices.applied",
            count=len(results),
            applied=applied,
            duplicates=len(results) - applied,
            revoked=revoked,
            first_seq=notices[0].seq,
            last_seq=notices[-1].seq,
            cursor=results[-1].cursor,
            event_ids=[notice.event_id for notice in notices],
            trace_ids=list(dict.fromkeys(n.trace_id for n in notices if n.trace_id)),
        )
        return results
