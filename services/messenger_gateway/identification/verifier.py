"""The background verifier: asks the operator for each VERIFYING identification until it answers
or the window ends, and records the outcome.

Verification runs as a background task owned by the verifier (not by the RPC that started it),
so a cancelled RPC does not cancel it. Its state is stored before the operator is asked; a
restart resumes it (resume_pending) with the same VerifySubscriber idempotency key (verify_key),
and each task is its own watchdog: when the window ends it fails the identification
OPERATOR_TIMEOUT, whatever the operator is doing. With several replicas on one database each
pending verification is held by one replica under a lease (settings.lease_ttl) that it renews
while it runs (keep_verifications); when a replica dies, another claims the verifications it
held once their leases expire and resumes them, with the same verify_key; a replica that finds
one of its verifications taken by another stops its own. A shutdown releases them for the
others at once. Each take of a verification's lease (beginning it, claiming it) raises the row's
lease token, and the task's writes carry the token it began with (a Fence): a replica that
comes back after its lease expired and another took the verification over (a pause, a
partition) has its answer refused in the same transaction (LeaseFenced), logs `lease.fenced`
and stops, and the verification is finished once, by the replica that holds it.

The task runs under the identification's trace id (the request id of StartIdentification,
stored with it), so every VerifySubscriber call for it carries that id, after a restart too.
Each task returns the identification as it ended (None when it ended elsewhere), so a
ConfirmPossession waiting on it needs no read.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from services.common.availability import log_failure
from services.common.context import traced
from services.common.failpoints import async_failpoint
from services.common.lease import Fence, Lease, LeaseFenced, log_fenced
from services.common.logging import get_logger
from services.common.metrics import ScrapeCollector, registered
from services.common.phone import mask
from services.common.timeutil import Clock
from services.messenger_gateway.identification import transactions
from services.messenger_gateway.identification.metrics import completed, observe_verification
from services.messenger_gateway.identification.model import (
    Identification,
    OperatorAnswer,
    OperatorUnavailable,
    Reason,
    State,
    Verdict,
)
from services.messenger_gateway.identification.ports import (
    GatewayStore,
    IdentificationListener,
    OperatorDirectory,
    tell,
)
from services.messenger_gateway.identification.settings import GatewaySettings
from services.messenger_gateway.identification.transitions import Event, answer_event

log = get_logger("idmesh.gateway")

Outcome = Identification | None  # a task's result: the identification as it ended


class Verifier:
    def __init__(
        self,
        settings: GatewaySettings,
        *,
        store: GatewayStore,
        operators: OperatorDirectory,
        clock: Clock,
        listener: IdentificationListener | None = None,
    ) -> None:
        self.settings = settings
        self._store = store
        self._operators = operators
        self._clock = clock
        self._listener = listener
        self._tasks: dict[str, asyncio.Task[Outcome]] = {}
        self._closed = False

    # --- the tasks ---------------------------------------------------------------------------

    @property
    def running(self) -> int:
        return len(self._tasks)

    def task_of(self, identification_id: str) -> asyncio.Task[Outcome] | None:
        return self._tasks.get(identification_id)

    def spawn(self, ident: Identification) -> asyncio.Task[Outcome] | None:
        """Start verifying ident (VERIFYING, stored, its lease just taken by this replica: its
        writes are fenced by ident.lease_token); the task, None when shutting down (the row
        stays VERIFYING for the next start)."""
        if self._closed:
            return None
        identification_id = ident.identification_id
        fence = Fence(identification_id, self.settings.replica_id, ident.lease_token)
        task = asyncio.create_task(
            self._verify_traced(ident, fence), name=f"verify-{identification_id}"
        )
        self._tasks[identification_id] = task

        def forget(done: asyncio.Task[Outcome]) -> None:
            if self._tasks.get(identification_id) is done:
                del self._tasks[identification_id]
            if not done.cancelled() and done.exception() is not None:
                log_failure(
                    log,
                    "verification.task_failed",
                    done.exception(),
                    identification_id=identification_id,
                )

        task.add_done_callback(forget)
        return task

    def cancel(self, identification_id: str) -> None:
        task = self._tasks.get(identification_id)
        if task is not None:
            task.cancel()

    def lease(self, now: datetime) -> Lease:
        return Lease(self.settings.replica_id, now + self.settings.lease_ttl)

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

    # --- leases and the watchdog -------------------------------------------------------------

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
        lost = await self._store.renew_verifications(self.lease(self._clock.now()), running)
        for identification_id in lost:
            log.warning(
                "verification.lease_lost",
                identification_id=identification_id,
                replica=self.settings.replica_id,
                action="stopped here; the replica that took it goes on",
            )
            self.cancel(identification_id)
        return await self._claim(), len(lost)

    async def _claim(self) -> int:
        if self._closed:  # shutting down: leave them to the others
            return 0
        now = self._clock.now()
        claimed = await self._store.claim_verifications(self.lease(now), now=now)
        resumed = 0
        for ident in claimed:
            if ident.identification_id in self._tasks or ident.verify_key is None:
                continue
            self.spawn(ident)
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

    async def expire_overdue(self, *, on: str = "watchdog") -> int:
        """Fail every VERIFYING identification whose window has passed, whoever holds it (a
        replica sharing the database may have died mid-verification). Each is failed, counted
        and logged by one replica: the compare-and-set succeeds for one caller."""
        expired = await transactions.expire_overdue(self._store, self._clock.now())
        for identification_id in expired:
            self.cancel(identification_id)
            completed(State.NOT_COMPLETED, Reason.OPERATOR_TIMEOUT)
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
                    except Exception as exc:
                        log_failure(log, "verification.watchdog_failed", exc, job=job.__name__)

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

    # --- one verification --------------------------------------------------------------------

    def _remaining(self, ident: Identification) -> float:
        assert ident.verification_deadline is not None
        return (ident.verification_deadline - self._clock.now()).total_seconds()

    async def _verify_traced(self, ident: Identification, fence: Fence) -> Outcome:
        with traced(ident.trace_id, span="verification", identification_id=ident.identification_id):
            try:
                return await self._verify(ident, fence)
            except LeaseFenced:
                log_fenced(
                    fence,
                    action="stopped here; the replica that took it over finishes it",
                    identification_id=ident.identification_id,
                )
                return None

    async def _verify(self, ident: Identification, fence: Fence) -> Outcome:
        """Ask the operator until it answers or the window ends; an identification not ended by
        an answer ends OPERATOR_TIMEOUT (the only write after the answers). A donor's "ported
        to X" hint is followed once, within the same window (see _follow_hint). Cancellation
        (shutdown, replacement) leaves the row for resume_pending or for whoever replaced it.
        Every write carries fence: LeaseFenced once another replica took the verification."""
        if not ident.operator_id or not self._operators.knows(ident.operator_id):
            return await self._finish_for_sure(ident, Event.NO_OPERATOR, fence)
        hop: Identification | None = ident
        try:
            async with asyncio.timeout(max(self._remaining(ident), 0.0)):
                while hop is not None:
                    ident = hop
                    hop, done, outcome = await self._ask_operator(ident, fence)
                    if done:
                        return outcome
        except TimeoutError:
            ident = await self._latest_hop(ident)
        return await self._finish_for_sure(ident, Event.WINDOW_PASSED, fence)

    async def _latest_hop(self, ident: Identification) -> Identification:
        """The window ended, maybe just as a hint's move to the recipient was committed: finish
        the identification under the verify_key it now has."""
        if ident.hinted_by is not None:
            return ident
        try:
            stored = await self._store.get(ident.identification_id)
        except Exception as exc:
            log_failure(
                log,
                "verification.reread_failed",
                exc,
                identification_id=ident.identification_id,
            )
            return ident
        if stored is not None and stored.state is State.VERIFYING and stored.hinted_by:
            return stored
        return ident

    async def _ask_operator(
        self, ident: Identification, fence: Fence
    ) -> tuple[Identification | None, bool, Outcome]:
        """Ask ident's operator until it answers or the window ends: (the identification moved
        to a recipient operator when the answer was a hint to follow, whether it ended here or
        elsewhere, the identification as it ended)."""
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
                    return await self._follow_hint(ident, answer.recipient_operator_id, fence)
                if answer.verdict is Verdict.TIMED_OUT:
                    return None, False, None  # the caller fails it OPERATOR_TIMEOUT
                recorded = await self._record(ident, answer, fence)
                # an answer too late to record: the caller fails it OPERATOR_TIMEOUT
                return None, recorded is not None, recorded
            except LeaseFenced:
                raise
            except OperatorUnavailable as exc:
                asked = exc.retry_after
                log.warning(
                    "verification.operator_unavailable",
                    identification_id=ident.identification_id,
                    operator_id=ident.operator_id,
                    attempt=attempt,
                    error=str(exc),
                )
            except Exception as exc:
                log_failure(
                    log,
                    "verification.attempt_failed",
                    exc,
                    identification_id=ident.identification_id,
                    attempt=attempt,
                )
            current = await self._store.get(ident.identification_id)
            if current is None or current.state is not State.VERIFYING:
                return None, True, None  # ended elsewhere (replaced, another gateway process)
            if not fence.admits(current.lease_holder, current.lease_token):
                raise LeaseFenced(fence)  # taken over: its writes would be refused
            wait = max(next(delays), asked)
            await asyncio.sleep(min(wait, max(self._remaining(ident), 0.0)))
        return None, False, None

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

    async def _follow_hint(
        self, ident: Identification, recipient: str, fence: Fence
    ) -> tuple[Identification | None, bool, Outcome]:
        """The donor says the number was ported to `recipient`: remember the route and move the
        verification there (stored first: a restart resumes at the recipient with the derived
        verify_key), or end it NO_OPERATOR when this messenger has no registry for the
        recipient. Returns what _ask_operator does."""
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
            ended = await self._finish(ident, Event.NO_OPERATOR, fence, operator_id=recipient)
            return None, True, ended
        moved = await transactions.follow_hint(
            self._store,
            ident.identification_id,
            ident.verify_key,
            recipient=recipient,
            donor=ident.operator_id,
            now=now,
            fence=fence,
        )
        if moved is None:
            # Another task (a second gateway process resuming it) may have moved it already.
            current = await self._store.get(ident.identification_id)
            if current is not None and current.state is State.VERIFYING and current.hinted_by:
                return current, False, None
            return None, True, None
        log.info(
            "verification.following_hint",
            identification_id=ident.identification_id,
            donor_operator_id=ident.operator_id,
            recipient_operator_id=recipient,
            phone=mask(ident.phone_number),
        )
        return moved, False, None

    async def _record(self, ident: Identification, answer: OperatorAnswer, fence: Fence) -> Outcome:
        operator_id = ident.operator_id
        if answer.verdict is Verdict.IDENTIFIED and answer.operator_id:
            operator_id = answer.operator_id
            if operator_id != ident.operator_id:
                log.warning(
                    "verification.operator_id_differs",
                    identification_id=ident.identification_id,
                    routed=ident.operator_id,
                    answered=operator_id,
                )
        code = answer.identification_code if answer.verdict is Verdict.IDENTIFIED else None
        ended = await self._finish(
            ident,
            answer_event(answer.verdict),
            fence,
            operator_id=operator_id,
            identification_code=code,
            answered=answer.verdict,
        )
        if ended is None:
            log.warning(
                "verification.answer_ignored",
                identification_id=ident.identification_id,
                verdict=answer.verdict,
                why="the window had passed or the identification had already ended",
            )
        return ended

    async def _finish(
        self,
        ident: Identification,
        event: Event,
        fence: Fence,
        *,
        operator_id: str | None = None,
        identification_code: str | None = None,
        answered: Verdict | None = None,
        within_window: bool = True,
    ) -> Outcome:
        """Record the verification's outcome if it is still VERIFYING under its verify key and
        this replica's lease on it (fence); counted, logged once and told to the listener. The
        identification as recorded."""
        assert ident.verify_key is not None
        recorded = await transactions.finish_verification(
            self._store,
            ident.identification_id,
            ident.verify_key,
            event=event,
            now=self._clock.now(),
            operator_id=operator_id,
            identification_code=identification_code,
            within_window=within_window,
            with_changes=self._listener is not None,
            fence=fence,
        )
        if recorded is None:
            return None
        ended, changes = recorded
        completed(ended.state, ended.reason)
        observe_verification(ident, self.settings.verification_window, self._clock.now())
        log.info(
            "identification.finished",
            identification_id=ident.identification_id,
            user_id=ident.user_id,
            state=ended.state,
            reason=ended.reason,
            operator_id=ended.operator_id or None,
            answered=answered,
        )
        await tell(self._listener, ended, changes)
        return ended

    async def _finish_for_sure(self, ident: Identification, event: Event, fence: Fence) -> Outcome:
        """VERIFYING -> NOT_COMPLETED by event (no answer came) if still VERIFYING, retrying a
        failed write (not a fenced one)."""
        delays = self.settings.verify_retry.delays()
        while True:
            try:
                return await self._finish(ident, event, fence, within_window=False)
            except LeaseFenced:
                raise
            except Exception as exc:
                log_failure(
                    log,
                    "verification.finish_failed",
                    exc,
                    identification_id=ident.identification_id,
                )
                await asyncio.sleep(next(delays))
