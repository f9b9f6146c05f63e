"""The identification state machine under random interleavings (hypothesis, stateful): starts,
confirmations with the right and a wrong code, operator answers (identified, also on a contract a
notice already ended; no subscriber; refused; a porting hint), window expiries, termination
notices and restarts, against the real service layer and the real store on each engine, with
operators that answer only when a step says so and a clock the steps move.

After every step: no identification is IDENTIFIED on a code a notice ended; a user has at most
one live identification (AWAITING_CODE, VERIFYING or IDENTIFIED), and it is the current one;
nothing is VERIFYING past its window; CheckAccess agrees with the current state."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Coroutine, Iterator
from contextlib import AsyncExitStack, suppress
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)

from services.common.config import Env
from services.common.errors import DomainError
from services.common.storage import StoreSettings
from services.messenger_gateway.identification.model import (
    OperatorAnswer,
    Reassignment,
    State,
    Verdict,
)
from services.messenger_gateway.identification.ports import GatewayStore
from services.messenger_gateway.main import open_store
from services.messenger_gateway.notices.model import TerminationKind, TerminationNotice
from services.messenger_gateway.service import GatewayService
from tests.eventually import eventually
from tests.messenger_gateway.fakes import (
    BEELINE_PHONE,
    MEGAFON_PHONE,
    FakeClock,
    RecordingSms,
    make_service,
)
from tests.postgres import create_store, drop_store

T = TypeVar("T")
OTHER_BEELINE_PHONE = "+79037654321"
PHONES = {BEELINE_PHONE: "beeline", MEGAFON_PHONE: "megafon", OTHER_BEELINE_PHONE: "beeline"}
WINDOW, OTP_TTL = 1200.0, 300.0
LIVE = (State.AWAITING_CODE, State.VERIFYING, State.IDENTIFIED)
# The steps, each as often as it appears.
STEPS = [
    *["start"] * 3,
    "change_number",
    *["confirm"] * 4,
    *["answer"] * 5,
    *["time_passes"] * 2,
    *["notice"] * 2,
    "restart",
]
VERDICTS = ["identified", "identified", "stale", "stale", "no_subscriber", "refused", "hint"]


class GatedOperators:
    """Operators that answer a VerifySubscriber only when the test resolves its call (by the
    verify key it was asked with)."""

    def __init__(self) -> None:
        self.known = {"beeline", "megafon"}
        self.pending: dict[str, asyncio.Future[OperatorAnswer]] = {}

    def knows(self, operator_id: str) -> bool:
        return operator_id in self.known

    async def verify(
        self, operator_id: str, *, idempotency_key: str, phone_number: str, time_limit: float
    ) -> OperatorAnswer:
        answer: asyncio.Future[OperatorAnswer] = asyncio.get_running_loop().create_future()
        self.pending[idempotency_key] = answer
        try:
            return await answer
        finally:
            if self.pending.get(idempotency_key) is answer:
                del self.pending[idempotency_key]

    async def check_reassigned(self, *args: Any, **kwargs: Any) -> Reassignment:
        raise AssertionError("not asked here")


class World:
    """What lives across the examples of one test: the event loop and the store."""

    runner: asyncio.Runner
    store: GatewayStore

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(work)


class IdentificationMachine(RuleBasedStateMachine):
    world: ClassVar[World]
    seqs: ClassVar[Iterator[int]] = itertools.count(1)

    def __init__(self) -> None:
        super().__init__()
        self.example = uuid.uuid4().hex[:8]  # users and codes of this example only
        self.users = [f"u{n}-{self.example}" for n in range(2)]
        self.clock, self.sms, self.operators = FakeClock(), RecordingSms(), GatedOperators()
        self.service = self._service()
        self.contract: dict[str, int] = dict.fromkeys(PHONES, 0)  # the number's contract
        self.ended: set[tuple[str, str]] = set()  # (operator, code) a notice ended
        # the users' current states, as the last check read them (for the rules' preconditions)
        self.awaiting = self.verifying = self.identified = False

    def _service(self) -> GatewayService:
        return make_service(
            self.world.store,
            sms=self.sms,
            operators=self.operators,  # type: ignore[arg-type]
            clock=self.clock,
            window=WINDOW,
            otp_ttl=OTP_TTL,
            attempts=3,
            routes=PHONES,
        )

    def _code(self, phone: str, contract: int) -> str:
        return f"IC-{PHONES[phone]}-{phone[-4:]}-{self.example}-{contract}"

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        return self.world.run(work)

    async def _settle(self, user: str) -> None:
        """Until the user's verification (if any) waits for its operator or has ended."""

        async def waiting_or_done() -> bool:
            current = await self.world.store.current(user)
            if current is None or current.state is not State.VERIFYING:
                return True
            return current.verify_key in self.operators.pending

        await eventually(waiting_or_done, within=10, what=f"{user}'s verification to settle")

    # --- steps -------------------------------------------------------------------------------

    @rule(
        step=st.sampled_from(STEPS),
        user=st.integers(0, 1),
        phone=st.sampled_from(sorted(PHONES)),
        flag=st.integers(0, 3),
        verdict=st.sampled_from(VERDICTS),
        seconds=st.sampled_from([1.0, 60.0, OTP_TTL + 1, WINDOW + 1]),
    )
    def act(
        self, step: str, user: int, phone: str, flag: int, verdict: str, seconds: float
    ) -> None:
        """One step, drawn with STEPS' weights (one rule, so that the draw is even)."""
        match step:
            case "start":
                self.start(user, phone)
            case "change_number":
                self.change_number(user, phone)
            case "confirm":
                self.confirm(user, right=flag > 0)  # mostly the right code
            case "answer":
                self.answer(user, verdict)
            case "time_passes":
                self.time_passes(seconds)
            case "notice":  # mostly on the number of the user's current identification
                current = self.run(self.world.store.current(self.users[user]))
                if current is not None and flag > 0:
                    phone = current.phone_number
                self.notice(phone, ported=flag == 0)
            case _:
                self.restart()

    def start(self, user: int, phone: str) -> None:
        self.run(self.service.start_identification(self.users[user], phone))

    def change_number(self, user: int, phone: str) -> None:
        async def change() -> None:
            # no identification to change, or the same number: refused, nothing changed
            with suppress(DomainError):
                await self.service.change_phone_number(self.users[user], phone)

        self.run(change())

    def confirm(self, user: int, right: bool) -> None:
        async def confirm() -> None:
            current = await self.world.store.current(self.users[user])
            if current is None:
                return
            code = self.sms.code_for(current.identification_id)
            if not right:
                code = f"{(int(code) + 1) % 1_000_000:06d}"
            # wrong code, expired, wrong state: each recorded or refused
            with suppress(DomainError):
                await self.service.confirm_possession(current.identification_id, code, wait=0)
            await self._settle(self.users[user])

        self.run(confirm())

    def answer(self, user: int, verdict: str) -> None:
        async def answer() -> None:
            current = await self.world.store.current(self.users[user])
            if current is None or current.state is not State.VERIFYING:
                return
            assert current.verify_key is not None
            await self._settle(self.users[user])
            call = self.operators.pending.get(current.verify_key)
            if call is None:  # ended meanwhile
                return
            operator, phone = current.operator_id, current.phone_number
            contract = self.contract[phone]
            match verdict:
                case "identified":
                    reply = OperatorAnswer(
                        Verdict.IDENTIFIED, operator, self._code(phone, contract)
                    )
                case "stale":  # the answer names the contract a notice ended (if one did)
                    old = max(0, contract - 1)
                    reply = OperatorAnswer(Verdict.IDENTIFIED, operator, self._code(phone, old))
                case "no_subscriber":
                    reply = OperatorAnswer(Verdict.NO_SUBSCRIBER, operator)
                case "refused":
                    reply = OperatorAnswer(Verdict.REFUSED, operator)
                case _:
                    other = "megafon" if operator == "beeline" else "beeline"
                    reply = OperatorAnswer(Verdict.NO_SUBSCRIBER, operator, "", other)
            task = self.service.verifier.task_of(current.identification_id)
            call.set_result(reply)
            if task is not None and verdict != "hint":
                await asyncio.wait({task}, timeout=10)
            await self._settle(self.users[user])

        self.run(answer())

    def time_passes(self, seconds: float) -> None:
        """The clock moves; the watchdog's sweep runs (as it does every interval)."""
        self.clock.advance(seconds)
        self.run(self.service.expire_overdue())

    def notice(self, phone: str, ported: bool) -> None:
        """The number's current contract ends: its code is ended, a new contract begins."""
        contract = self.contract[phone]
        code = self._code(phone, contract)
        seq = next(self.seqs)
        notice = TerminationNotice(
            seq=seq,
            event_id=f"ev-{self.example}-{seq}",
            operator_id=PHONES[phone],
            messenger_id="alpha",
            identification_code=code,
            kind=TerminationKind.PORTED_OUT if ported else TerminationKind.CONTRACT_ENDED,
        )
        self.run(self.service.apply_notices([notice]))
        self.ended.add((PHONES[phone], code))
        self.contract[phone] = contract + 1

    def restart(self) -> None:
        """The gateway stops (its verifications released) and starts again (resumed)."""

        async def restart() -> None:
            await self.service.close()
            self.service = self._service()
            await self.service.resume_pending()
            for user in self.users:
                await self._settle(user)

        self.run(restart())

    def teardown(self) -> None:
        self.run(self.service.close())

    # --- what must always hold ---------------------------------------------------------------

    @invariant()
    def promises_hold(self) -> None:
        states: list[State | None] = []

        async def check() -> None:
            now = self.clock.now()
            for user in self.users:
                history = await self.world.store.history(user)
                for ident in history:
                    if ident.state is State.IDENTIFIED:
                        assert ident.identification_code is not None
                        key = (ident.operator_id, ident.identification_code)
                        assert key not in self.ended, f"IDENTIFIED on an ended code: {ident}"
                    if ident.state is State.VERIFYING:
                        assert ident.verification_deadline is not None
                        assert ident.verification_deadline > now, f"VERIFYING past: {ident}"
                live = [i for i in history if i.state in LIVE]
                assert len(live) <= 1, f"{user} has {len(live)} live identifications"
                if live:
                    assert live[0] == history[-1]  # the live one is the current one
                states.append(history[-1].state if history else None)
                access = await self.service.check_access(user)
                current = history[-1] if history else None
                assert access.state == (None if current is None else current.state)
                assert access.allowed == (current is not None and current.state is State.IDENTIFIED)

        self.run(check())
        self.awaiting = State.AWAITING_CODE in states
        self.verifying = State.VERIFYING in states
        self.identified = State.IDENTIFIED in states


@pytest.fixture
def world(engine: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[World]:
    """The store on `engine`, opened in an event loop of the test's own (the machine's steps
    are synchronous, each runs its coroutine there)."""
    world = World()
    with asyncio.Runner() as runner:
        world.runner = runner
        exits = AsyncExitStack()
        environ = {"IDMESH_DB_PATH": str(tmp_path / "gw.db")}
        admin_url = url = None
        if engine == "postgresql":
            admin_url = request.getfixturevalue("postgres_admin_url")
            url = runner.run(create_store(admin_url))
            environ["IDMESH_DATABASE_URL"] = url
        world.store = runner.run(
            exits.enter_async_context(open_store(StoreSettings.from_env(Env(environ))))
        )
        try:
            yield world
        finally:
            runner.run(exits.aclose())
            if admin_url is not None and url is not None:
                runner.run(drop_store(admin_url, url))


def test_the_identification_promises_hold_under_random_interleavings(world: World) -> None:
    IdentificationMachine.world = world
    run_state_machine_as_test(
        IdentificationMachine,
        settings=settings(
            max_examples=60,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
