"""Test doubles for the gateway: a clock, the service's ports, and in-process fake
RegistryService / NotifierService servicers for the gRPC tests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
from idmesh.events.v1 import events_pb2
from idmesh.notifier.v1 import notifier_pb2, notifier_pb2_grpc
from idmesh.registry.v1 import registry_pb2, registry_pb2_grpc

from services.common.backoff import Backoff
from services.common.context import current_request_id
from services.common.db import Database
from services.common.errors import DomainError, Forbidden
from services.common.identity import Kind, require_caller
from services.common.interceptors import ErrorTable
from services.common.phone import require_e164
from services.common.ratelimit import RateLimit, RateLimited
from services.common.server import GrpcServer, service_name
from services.localmesh.process import free_port as localmesh_free_port
from services.messenger_gateway.adapters.schema import MIGRATIONS
from services.messenger_gateway.adapters.store import SqliteGatewayStore
from services.messenger_gateway.identification.codes import CodeHasher
from services.messenger_gateway.identification.model import (
    OperatorAnswer,
    OperatorUnavailable,
    Reassignment,
    SmsMessage,
    State,
    Verdict,
)
from services.messenger_gateway.identification.ports import GatewayStore, PolicyFollower
from services.messenger_gateway.identification.settings import GatewaySettings
from services.messenger_gateway.routing.router import Route
from services.messenger_gateway.service import GatewayService
from services.operator_registry.domain import IdempotencyKeyReused, validate_idempotency_key

FAST_HASHER = CodeHasher(key=b"unit-test-otp-key-32-bytes-long!")
FAST_RETRY = Backoff(initial=0.01, maximum=0.05)


class FakeClock:
    """Starts at the real time and moves with it; advance() jumps ahead."""

    def __init__(self) -> None:
        self._offset = timedelta(0)

    def now(self) -> datetime:
        return datetime.now(UTC) + self._offset

    def advance(self, seconds: float) -> None:
        self._offset += timedelta(seconds=seconds)


class RecordingSms:
    def __init__(self) -> None:
        self.sent: list[SmsMessage] = []

    async def send(self, message: SmsMessage) -> None:
        self.sent.append(message)

    def code_for(self, identification_id: str) -> str:
        for message in reversed(self.sent):
            if message.identification_id == identification_id:
                return message.code
        raise AssertionError(f"no SMS for {identification_id}")


class StaticRouter:
    def __init__(self, routes: dict[str, str]) -> None:
        self.routes = routes  # phone number -> operator id

    def route(self, e164: str) -> Route:
        operator_id = self.routes.get(e164)
        return Route(operator_id, operator_id, "static") if operator_id else Route(None)

    async def resolve(self, e164: str) -> Route:
        return self.route(e164)


Behaviour = Callable[[str, float], Awaitable[OperatorAnswer]]


@dataclass
class FakeOperators:
    """The OperatorDirectory port. answers: phone -> an answer, an exception to raise, or an
    async behaviour(idempotency_key, time_limit). calls records (operator, idempotency_key,
    phone); traces the request id each call would carry (the identification's trace id).
    reassigned: operator -> its answer to check_reassigned() or an exception to raise (NO_DATA
    when not set); reassigned_calls records (operator, phone, since)."""

    known: set[str] = field(default_factory=lambda: {"beeline", "megafon"})
    answers: dict[str, Any] = field(default_factory=dict)
    calls: list[tuple[str, str, str]] = field(default_factory=list)
    traces: list[str | None] = field(default_factory=list)
    on_call: Callable[[str, str], Awaitable[None]] | None = None
    reassigned: dict[str, Reassignment | BaseException] = field(default_factory=dict)
    reassigned_calls: list[tuple[str, str, datetime]] = field(default_factory=list)

    def knows(self, operator_id: str) -> bool:
        return operator_id in self.known

    async def verify(
        self, operator_id: str, *, idempotency_key: str, phone_number: str, time_limit: float
    ) -> OperatorAnswer:
        self.calls.append((operator_id, idempotency_key, phone_number))
        self.traces.append(current_request_id())
        if self.on_call is not None:
            await self.on_call(idempotency_key, phone_number)
        answer = self.answers.get(phone_number, identified(operator_id, phone_number))
        if isinstance(answer, list):
            answer = answer.pop(0) if len(answer) > 1 else answer[0]
        if isinstance(answer, BaseException):
            raise answer
        if callable(answer):
            result: OperatorAnswer = await answer(idempotency_key, time_limit)
            return result
        assert isinstance(answer, OperatorAnswer)
        return answer

    async def check_reassigned(
        self, operator_id: str, *, phone_number: str, since: datetime, time_limit: float
    ) -> Reassignment:
        self.reassigned_calls.append((operator_id, phone_number, since))
        answer = self.reassigned.get(operator_id, Reassignment.NO_DATA)
        if isinstance(answer, BaseException):
            raise answer
        return answer


def identified(operator_id: str, phone: str) -> OperatorAnswer:
    return OperatorAnswer(Verdict.IDENTIFIED, operator_id, f"IC-{operator_id}-{phone[-4:]}")


async def hang(idempotency_key: str, time_limit: float) -> OperatorAnswer:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


UNAVAILABLE = OperatorUnavailable("beeline: UNAVAILABLE: connection refused")

BEELINE_PHONE = "+79031234567"
MEGAFON_PHONE = "+79261234567"
UNROUTED_PHONE = "+79161234567"


async def open_store(path: Path) -> tuple[Database, GatewayStore]:
    db = await Database.open(path, MIGRATIONS)
    return db, SqliteGatewayStore(db)


def make_service(
    store: GatewayStore,
    *,
    operators: FakeOperators | None = None,
    sms: RecordingSms | None = None,
    clock: FakeClock | None = None,
    window: float = 5.0,
    otp_ttl: float = 300.0,
    attempts: int = 3,
    routes: dict[str, str] | None = None,
    policy: PolicyFollower | None = None,
    replica_id: str = "replica-1",
    lease_ttl: float = 6.0,
    user_limit: RateLimit | None = None,
) -> GatewayService:
    return GatewayService(
        GatewaySettings(
            messenger_id="alpha",
            verification_window=timedelta(seconds=window),
            otp_ttl=timedelta(seconds=otp_ttl),
            otp_max_attempts=attempts,
            verify_retry=FAST_RETRY,
            replica_id=replica_id,
            lease_ttl=timedelta(seconds=lease_ttl),
            otp_user_limit=user_limit,
        ),
        store=store,
        router=StaticRouter(
            routes
            if routes is not None
            else {BEELINE_PHONE: "beeline", MEGAFON_PHONE: "megafon", "+79037654321": "beeline"}
        ),
        sms=sms or RecordingSms(),
        operators=operators or FakeOperators(),
        clock=clock or FakeClock(),
        code_hasher=FAST_HASHER,
        policy=policy,
    )


async def identify(
    service: GatewayService, sms: RecordingSms, user_id: str, phone: str = BEELINE_PHONE
) -> str:
    """Run a user through to IDENTIFIED; returns the identification id."""
    started = await service.start_identification(user_id, phone)
    done = await service.confirm_possession(
        started.identification_id, sms.code_for(started.identification_id), wait=5.0
    )
    assert done.state is State.IDENTIFIED, done
    return started.identification_id


# --- gRPC fakes ------------------------------------------------------------------------------


def free_port() -> int:
    """A port nothing listens on now, below the ephemeral range (for a server started later in
    the test: no outgoing connection takes it meanwhile)."""
    return localmesh_free_port()


class FakeRegistry(registry_pb2_grpc.RegistryServiceServicer):
    """RegistryService of operator `operator_id`. Behaviour by number: `identified` (default),
    `no_subscriber`, `refused` (PERMISSION_DENIED), `hang` (never answers) or `ported:<op>`
    (NO_SUBSCRIBER with the hint <op>), `rate_limited_once` (RESOURCE_EXHAUSTED with a 0.7 s
    RetryInfo, then identified). CheckNumberReassigned answers `reassignment` (a
    registry_pb2 ReassignmentStatus) or, when it is a grpc.StatusCode, fails with it.
    As the real one (pinned by tests/contract/test_fakes.py): a malformed number or idempotency
    key is INVALID_ARGUMENT, and a repeated idempotency key gets the answer it got the first
    time (INVALID_ARGUMENT when it comes with another number)."""

    def __init__(self, operator_id: str) -> None:
        self.operator_id = operator_id
        self.behaviour: dict[str, str] = {}
        self.requests: list[tuple[str, str, str]] = []  # (caller uri, idempotency_key, phone)
        # (messenger, idempotency key) -> (phone, the answer given)
        self.answered: dict[tuple[str, str], tuple[str, registry_pb2.VerifySubscriberResponse]] = {}
        self.reassignment: Any = registry_pb2.REASSIGNMENT_STATUS_NOT_REASSIGNED
        self.reassigned_requests: list[registry_pb2.CheckNumberReassignedRequest] = []

    async def CheckNumberReassigned(
        self, request: registry_pb2.CheckNumberReassignedRequest, context: Any
    ) -> registry_pb2.CheckNumberReassignedResponse:
        require_caller(Kind.MESSENGER)
        self.reassigned_requests.append(request)
        if isinstance(self.reassignment, grpc.StatusCode):
            await context.abort(self.reassignment, f"{self.operator_id} says no")
        return registry_pb2.CheckNumberReassignedResponse(status=self.reassignment)

    async def VerifySubscriber(
        self, request: registry_pb2.VerifySubscriberRequest, context: Any
    ) -> registry_pb2.VerifySubscriberResponse:
        caller = require_caller(Kind.MESSENGER)
        given = (
            request.request_id or request.idempotency_key
        )  # the key's two names, as the real one
        self.requests.append((caller.uri, given, request.phone_number))
        key = validate_idempotency_key(given)
        phone = require_e164(request.phone_number)
        earlier = self.answered.get((caller.id, key))
        if earlier is not None:
            if earlier[0] != phone:
                raise IdempotencyKeyReused("idempotency_key was already used for another number")
            return earlier[1]
        answer = await self._answer(caller.id, request)
        self.answered[(caller.id, key)] = (phone, answer)
        return answer

    async def _answer(
        self, messenger_id: str, request: registry_pb2.VerifySubscriberRequest
    ) -> registry_pb2.VerifySubscriberResponse:
        behaviour = self.behaviour.get(request.phone_number, "identified")
        if behaviour.startswith("ported:"):
            return registry_pb2.VerifySubscriberResponse(
                result=registry_pb2.VERIFICATION_RESULT_NO_SUBSCRIBER,
                operator_id=self.operator_id,
                recipient_operator_id=behaviour.removeprefix("ported:"),
            )
        match behaviour:
            case "refused":
                raise Forbidden(
                    f"messenger {messenger_id} has no agreement with {self.operator_id}"
                )
            case "no_subscriber":
                return registry_pb2.VerifySubscriberResponse(
                    result=registry_pb2.VERIFICATION_RESULT_NO_SUBSCRIBER,
                    operator_id=self.operator_id,
                )
            case "hang":
                await asyncio.Event().wait()
            case "rate_limited_once":
                self.behaviour[request.phone_number] = "identified"
                raise RateLimited("too many requests", retry_after=timedelta(milliseconds=700))
        return registry_pb2.VerifySubscriberResponse(
            result=registry_pb2.VERIFICATION_RESULT_IDENTIFIED,
            identification_code=registration_code(self.operator_id, request.phone_number),
            operator_id=self.operator_id,
        )


def registration_code(operator_id: str, phone: str) -> str:
    return f"IC-{operator_id}-{phone[-4:]}"


async def start_registry(operator_id: str, port: int = 0) -> tuple[GrpcServer, FakeRegistry]:
    server = GrpcServer(name=f"fake-{operator_id}", bind=f"127.0.0.1:{port}", errors=ErrorTable({}))
    fake = FakeRegistry(operator_id)
    server.add(
        registry_pb2_grpc.add_RegistryServiceServicer_to_server,
        fake,
        service_name(registry_pb2.DESCRIPTOR, "RegistryService"),
    )
    await server.start()
    return server, fake


class CursorOutOfRange(DomainError):
    pass


Script = Callable[[notifier_pb2.SubscribeRequest], AsyncIterator[notifier_pb2.SubscribeResponse]]


class FakeNotifier(notifier_pb2_grpc.NotifierServiceServicer):
    """The messenger's event log (seq = position) streamed like the real notifier, unless a
    script (popped per Subscribe call, in order) says otherwise. As the real one (pinned by
    tests/contract/test_fakes.py): a cursor below the retained floor or beyond the head, and an
    ack beyond the head, are OUT_OF_RANGE; acks are monotonic; an idle stream carries progress
    marks every progress_interval seconds; publish() of a stored event id adds nothing."""

    def __init__(self, messenger_id: str = "alpha", *, progress_interval: float = 5.0) -> None:
        self.messenger_id = messenger_id
        self.log: list[notifier_pb2.Notice] = []
        self.changed = asyncio.Condition()
        self.subscribes: list[int] = []  # after_seq of each Subscribe
        self.acks: list[int] = []  # up_to_seq of each Ack, as asked
        self.acked_seq = 0
        self.floor_seq = 1  # the first seq still retained (prune() raises it)
        self.progress_interval = progress_interval
        self.scripts: list[Script] = []

    async def publish(self, event: events_pb2.ContractTerminated) -> notifier_pb2.Notice:
        """Publish as an operator does: an event id already stored is a no-op (its notice)."""
        for notice in self.log:
            if notice.event.event_id == event.event_id:
                return notice
        notice = notifier_pb2.Notice(seq=len(self.log) + 1, event=event)
        async with self.changed:
            self.log.append(notice)
            self.changed.notify_all()
        return notice

    def prune(self, through_seq: int) -> None:
        """Forget the notices up to through_seq (acked and older than retention)."""
        self.floor_seq = max(self.floor_seq, through_seq + 1)

    async def append(
        self,
        *,
        event_id: str,
        identification_code: str,
        operator_id: str = "beeline",
        reason: int = events_pb2.TERMINATION_REASON_CONTRACT_ENDED,
        trace_id: str = "",
    ) -> notifier_pb2.Notice:
        """Write a notice to the log as given: an event id already there gets a second seq
        (a duplicate the gateway's inbox must recognise)."""
        notice = notice_pb(
            len(self.log) + 1,
            event_id=event_id,
            identification_code=identification_code,
            operator_id=operator_id,
            reason=reason,
            messenger_id=self.messenger_id,
        )
        notice.event.trace_id = trace_id
        async with self.changed:
            self.log.append(notice)
            self.changed.notify_all()
        return notice

    def _check(self, messenger_id: str) -> None:
        caller = require_caller(Kind.MESSENGER)
        if caller.id != messenger_id or messenger_id != self.messenger_id:
            raise Forbidden("not your stream")

    async def Subscribe(
        self, request: notifier_pb2.SubscribeRequest, context: Any
    ) -> AsyncIterator[notifier_pb2.SubscribeResponse]:
        self._check(request.messenger_id)
        self.subscribes.append(request.after_seq)
        if self.scripts:
            async for item in self.scripts.pop(0)(request):
                yield item
            return
        if not self.floor_seq - 1 <= request.after_seq <= len(self.log):
            raise CursorOutOfRange(
                f"after_seq {request.after_seq} is outside the retained range "
                f"{self.floor_seq - 1}..{len(self.log)}"
            )
        next_seq = request.after_seq + 1
        while True:
            idle = False
            async with self.changed:
                try:
                    async with asyncio.timeout(self.progress_interval):
                        await self.changed.wait_for(lambda n=next_seq: len(self.log) >= n)  # type: ignore[misc]
                except TimeoutError:
                    idle = True
            if idle:  # nothing new for progress_interval: a progress mark
                yield notifier_pb2.SubscribeResponse(
                    progress=notifier_pb2.ProgressMark(head_seq=len(self.log))
                )
                continue
            if not request.max_batch_size:  # one notice per message, as the real notifier
                if next_seq <= len(self.log):
                    yield notifier_pb2.SubscribeResponse(notice=self.log[next_seq - 1])
                    next_seq += 1
            elif next_seq <= len(self.log):  # every notice there is, in one message
                yield notifier_pb2.SubscribeResponse(notices=self.log[next_seq - 1 :])
                next_seq = len(self.log) + 1

    async def Ack(self, request: notifier_pb2.AckRequest, context: Any) -> notifier_pb2.AckResponse:
        self._check(request.messenger_id)
        self.acks.append(request.up_to_seq)
        if request.up_to_seq > len(self.log):
            raise CursorOutOfRange(
                f"up_to_seq {request.up_to_seq} is beyond the head {len(self.log)}"
            )
        self.acked_seq = max(self.acked_seq, request.up_to_seq)
        return notifier_pb2.AckResponse(acked_seq=self.acked_seq)


def notice_pb(
    seq: int,
    *,
    event_id: str,
    identification_code: str,
    operator_id: str = "beeline",
    reason: int = events_pb2.TERMINATION_REASON_CONTRACT_ENDED,
    messenger_id: str = "alpha",
) -> notifier_pb2.Notice:
    return notifier_pb2.Notice(
        seq=seq,
        event=events_pb2.ContractTerminated(
            event_id=event_id,
            operator_id=operator_id,
            messenger_id=messenger_id,
            phone_number=BEELINE_PHONE,
            identification_code=identification_code,
            reason=reason,  # type: ignore[arg-type]
        ),
    )


async def start_notifier(messenger_id: str = "alpha") -> tuple[GrpcServer, FakeNotifier]:
    server = GrpcServer(
        name="fake-notifier",
        bind="127.0.0.1:0",
        errors=ErrorTable({CursorOutOfRange: grpc.StatusCode.OUT_OF_RANGE}),
    )
    fake = FakeNotifier(messenger_id)
    server.add(
        notifier_pb2_grpc.add_NotifierServiceServicer_to_server,
        fake,
        service_name(notifier_pb2.DESCRIPTOR, "NotifierService"),
    )
    await server.start()
    return server, fake


def read_outbox(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def outbox_code(path: Path, identification_id: str) -> str:
    for message in reversed(read_outbox(path)):
        if message["identification_id"] == identification_id:
            return str(message["code"])
    raise AssertionError(f"no SMS for {identification_id} in {path}")
