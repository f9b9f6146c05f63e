"""Ported numbers at the gateway: the ported-numbers table (import, routing order), following a
donor's hint once, and "has the user's number changed hands since identification?"."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from idmesh.common.v1 import bulk_pb2
from idmesh.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from idmesh.registry.v1 import registry_pb2

from services.cli import main as cli
from services.common.channels import open_channel
from services.common.context import current_request_id
from services.common.errors import InvalidInput
from services.common.identity import Caller, Kind, Role
from services.common.timeutil import to_timestamp
from services.messenger_gateway.identification.model import (
    AgreementMissing,
    IdentificationNotFound,
    NeverIdentified,
    OperatorAnswer,
    OperatorRefused,
    OperatorUnreachable,
    Reason,
    Reassignment,
    State,
    Verdict,
)
from services.messenger_gateway.identification.ports import GatewayStore
from services.messenger_gateway.notices.model import TerminationKind, TerminationNotice
from services.messenger_gateway.routing.model import PortedNumber, RouteOrigin
from services.messenger_gateway.routing.ported import PortedRowInput
from services.messenger_gateway.routing.router import (
    NumberingPlan,
    PortedNumbersTable,
    Route,
    build_router,
)
from services.messenger_gateway.service import GatewayService, GatewaySettings, PortedBatch
from tests.eventually import eventually
from tests.messenger_gateway.fakes import (
    FAST_HASHER,
    FAST_RETRY,
    UNAVAILABLE,
    FakeClock,
    RecordingSms,
    hang,
    start_registry,
)
from tests.messenger_gateway.test_grpc import FRONTEND, Harness, running_gateway

REPO = Path(__file__).resolve().parents[2]
PLAN = NumberingPlan.load(REPO / "deploy" / "numbering-plan.csv")
CARRIERS = {"Beeline": "beeline", "MegaFon": "megafon"}
NUMBER = "+79035550101"  # Beeline's range (+7903) in the numbering plan
MTS_NUMBER = "+79161234567"  # MTS's range: no registry configured
ADMIN = Caller(Kind.MESSENGER, "alpha", Role.ADMIN)
DAY = timedelta(days=1)


# --- fakes and helpers --------------------------------------------------------------------------


@dataclass
class Operators:
    """OperatorDirectory with answers per (operator, number): an OperatorAnswer, an exception,
    or an async behaviour(idempotency_key, time_limit). Unknown pairs: NO_SUBSCRIBER."""

    known: set[str] = field(default_factory=lambda: {"beeline", "megafon"})
    answers: dict[tuple[str, str], Any] = field(default_factory=dict)
    calls: list[tuple[str, str, str]] = field(default_factory=list)
    traces: list[str | None] = field(default_factory=list)  # each call's request id
    reassigned: dict[str, Any] = field(default_factory=dict)  # operator -> answer or exception
    reassigned_calls: list[tuple[str, str, datetime]] = field(default_factory=list)

    def knows(self, operator_id: str) -> bool:
        return operator_id in self.known

    async def verify(
        self, operator_id: str, *, idempotency_key: str, phone_number: str, time_limit: float
    ) -> OperatorAnswer:
        self.calls.append((operator_id, idempotency_key, phone_number))
        self.traces.append(current_request_id())
        answer = self.answers.get(
            (operator_id, phone_number), OperatorAnswer(Verdict.NO_SUBSCRIBER, operator_id)
        )
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
        answer = self.reassigned[operator_id]
        if isinstance(answer, BaseException):
            raise answer
        assert isinstance(answer, Reassignment)
        return answer


def hint(donor: str, recipient: str) -> OperatorAnswer:
    return OperatorAnswer(Verdict.NO_SUBSCRIBER, donor, recipient_operator_id=recipient)


def identified(operator_id: str) -> OperatorAnswer:
    return OperatorAnswer(Verdict.IDENTIFIED, operator_id, f"IC-{operator_id}")


def gateway(
    store: GatewayStore,
    operators: Operators,
    *,
    sms: RecordingSms,
    clock: FakeClock | None = None,
    window: float = 5.0,
) -> GatewayService:
    """A service with the production router: the store's ported table, the plan, carrier data."""
    return GatewayService(
        GatewaySettings(
            messenger_id="alpha",
            verification_window=timedelta(seconds=window),
            verify_retry=FAST_RETRY,
        ),
        store=store,
        router=build_router(
            PLAN,
            carriers=CARRIERS,
            operators={"beeline", "megafon"},
            ported=PortedNumbersTable(store),
        ),
        sms=sms,
        operators=operators,
        clock=clock or FakeClock(),
        code_hasher=FAST_HASHER,
    )


async def run(service: GatewayService, sms: RecordingSms, user: str, phone: str = NUMBER) -> Any:
    started = await service.start_identification(user, phone)
    return await service.confirm_possession(
        started.identification_id, sms.code_for(started.identification_id), wait=5.0
    )


async def batches(*groups: tuple[bool, list[PortedRowInput]]) -> AsyncIterator[PortedBatch]:
    for all_or_nothing, rows in groups:
        yield PortedBatch(all_or_nothing, rows)


def row(line: int, phone: str, operator: str, ported_at: datetime | None) -> PortedRowInput:
    return PortedRowInput(line, phone, operator, ported_at)


@pytest.fixture
def sms() -> RecordingSms:
    return RecordingSms()


# --- routing order ------------------------------------------------------------------------------


async def test_the_ported_table_goes_before_the_numbering_plan_and_carrier_data(
    store: GatewayStore,
) -> None:
    router = build_router(
        PLAN, carriers=CARRIERS, operators={"beeline", "megafon"}, ported=PortedNumbersTable(store)
    )
    assert router.sources == ["ported_numbers", "numbering_plan", "carrier_data"]
    assert await router.resolve(NUMBER) == Route("beeline", "Beeline", "numbering_plan")

    now = datetime.now(UTC)
    await store.stage_ported("i1", [(2, PortedNumber(NUMBER, "megafon", now - DAY))])
    assert await store.commit_ported("i1", now) == 1
    assert await router.resolve(NUMBER) == Route("megafon", None, "ported_numbers")

    await store.remember_hint(NUMBER, "mts", now)  # later than the import: replaces it
    assert await router.resolve(NUMBER) == Route("mts", None, "operator_hint")
    with pytest.raises(TypeError, match="resolve"):
        router.route(NUMBER)


# --- the donor's hint ---------------------------------------------------------------------------


async def test_a_donors_hint_is_followed_once_and_remembered_as_a_route(
    store: GatewayStore, sms: RecordingSms
) -> None:
    operators = Operators(
        answers={
            ("beeline", NUMBER): hint("beeline", "megafon"),
            ("megafon", NUMBER): identified("megafon"),
        }
    )
    service = gateway(store, operators, sms=sms)

    done = await run(service, sms, "u1")

    assert (done.state, done.operator_id, done.hinted_by) == (
        State.IDENTIFIED,
        "megafon",
        "beeline",
    )
    [(donor, first_id, _), (recipient, second_id, _)] = operators.calls
    assert (donor, recipient) == ("beeline", "megafon")
    assert second_id == first_id + "-hint" == done.verify_key
    assert operators.traces == [done.trace_id] * 2  # the follow-up carries the same trace id
    remembered = await store.ported_number(NUMBER)
    assert remembered is not None
    assert (remembered.operator_id, remembered.origin) == ("megafon", RouteOrigin.HINT)

    operators.calls.clear()  # next time the remembered route goes straight to the recipient
    again = await run(service, sms, "u2")
    assert again.state is State.IDENTIFIED
    assert [c[0] for c in operators.calls] == ["megafon"]
    resolved = await service.resolve_operator(NUMBER)
    assert (resolved.route.source, resolved.configured) == ("operator_hint", True)
    await service.close()


async def test_a_second_hint_from_the_recipient_is_not_followed(
    store: GatewayStore, sms: RecordingSms
) -> None:
    operators = Operators(
        answers={
            ("beeline", NUMBER): hint("beeline", "megafon"),
            ("megafon", NUMBER): hint("megafon", "beeline"),
        }
    )
    service = gateway(store, operators, sms=sms)

    done = await run(service, sms, "u1")

    assert (done.state, done.reason) == (State.NOT_COMPLETED, Reason.NO_SUBSCRIBER)
    assert [c[0] for c in operators.calls] == ["beeline", "megafon"]
    remembered = await store.ported_number(NUMBER)
    assert remembered is not None and remembered.operator_id == "megafon"  # only the first
    await service.close()


async def test_a_hint_naming_the_asked_operator_itself_is_not_followed(
    store: GatewayStore, sms: RecordingSms
) -> None:
    operators = Operators(answers={("beeline", NUMBER): hint("beeline", "beeline")})
    service = gateway(store, operators, sms=sms)
    done = await run(service, sms, "u1")
    assert (done.state, done.reason) == (State.NOT_COMPLETED, Reason.NO_SUBSCRIBER)
    assert len(operators.calls) == 1
    await service.close()


async def test_a_hint_to_an_operator_without_a_registry_here_is_no_operator(
    store: GatewayStore, sms: RecordingSms
) -> None:
    operators = Operators(answers={("beeline", NUMBER): hint("beeline", "mts")})
    service = gateway(store, operators, sms=sms)

    done = await run(service, sms, "u1")

    assert (done.state, done.reason, done.operator_id) == (
        State.NOT_COMPLETED,
        Reason.NO_OPERATOR,
        "mts",
    )
    assert len(operators.calls) == 1
    remembered = await store.ported_number(NUMBER)
    assert remembered is not None and remembered.operator_id == "mts"
    resolved = await service.resolve_operator(NUMBER)
    assert (resolved.route.operator_id, resolved.configured) == ("mts", False)
    await service.close()


async def test_a_restart_mid_hint_resumes_at_the_recipient_with_the_derived_idempotency_key(
    store: GatewayStore, sms: RecordingSms
) -> None:
    clock = FakeClock()
    first_ops = Operators(
        answers={("beeline", NUMBER): hint("beeline", "megafon"), ("megafon", NUMBER): hang}
    )
    first = gateway(store, first_ops, sms=sms, clock=clock, window=60)
    started = await first.start_identification("u1", NUMBER)
    await first.confirm_possession(
        started.identification_id, sms.code_for(started.identification_id), wait=0.05
    )
    await eventually(lambda: len(first_ops.calls) == 2, what="the recipient asked")
    await first.close()  # the process stops while the recipient is being asked
    pending = await store.get(started.identification_id)
    assert pending is not None
    assert (pending.state, pending.operator_id, pending.hinted_by) == (
        State.VERIFYING,
        "megafon",
        "beeline",
    )

    clock.advance(30)
    second_ops = Operators(answers={("megafon", NUMBER): hint("megafon", "beeline")})
    second = gateway(store, second_ops, sms=sms, clock=clock, window=60)
    assert await second.resume_pending() == (1, 0)
    await eventually(
        lambda: _state(store, started.identification_id, State.NOT_COMPLETED), what="ended"
    )
    # asked the recipient again, idempotently, and did not follow its hint back to the donor
    assert second_ops.calls == [("megafon", first_ops.calls[1][1], NUMBER)]
    assert first_ops.calls[1][1] == first_ops.calls[0][1] + "-hint"
    await second.close()


async def test_the_window_covers_the_hint_too(store: GatewayStore, sms: RecordingSms) -> None:
    operators = Operators(
        answers={("beeline", NUMBER): hint("beeline", "megafon"), ("megafon", NUMBER): hang}
    )
    service = gateway(store, operators, sms=sms, window=1.0)
    started = await service.start_identification("u1", NUMBER)
    await service.confirm_possession(
        started.identification_id, sms.code_for(started.identification_id), wait=0.0
    )
    await eventually(lambda: len(operators.calls) == 2, what="the recipient asked")
    await eventually(
        lambda: _state(store, started.identification_id, State.NOT_COMPLETED), what="timed out"
    )
    done = await store.get(started.identification_id)
    assert done is not None
    assert (done.reason, done.operator_id) == (Reason.OPERATOR_TIMEOUT, "megafon")
    await service.close()


async def test_an_unavailable_recipient_is_asked_again_within_the_window(
    store: GatewayStore, sms: RecordingSms
) -> None:
    flaky: list[OperatorAnswer | BaseException] = [UNAVAILABLE, identified("megafon")]

    async def recipient(idempotency_key: str, time_limit: float) -> OperatorAnswer:
        answer = flaky.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    operators = Operators(
        answers={("beeline", NUMBER): hint("beeline", "megafon"), ("megafon", NUMBER): recipient}
    )
    service = gateway(store, operators, sms=sms)
    done = await run(service, sms, "u1")
    assert (done.state, done.operator_id) == (State.IDENTIFIED, "megafon")
    assert [c[0] for c in operators.calls] == ["beeline", "megafon", "megafon"]
    assert operators.calls[1][1] == operators.calls[2][1]
    await service.close()


async def _state(store: GatewayStore, identification_id: str, state: State) -> bool:
    ident = await store.get(identification_id)
    return ident is not None and ident.state is state


# --- importing the ported-numbers table ---------------------------------------------------------


async def test_an_import_stores_valid_rows_and_reports_the_others_by_line(
    store: GatewayStore, sms: RecordingSms
) -> None:
    service = gateway(store, Operators(), sms=sms)
    now = datetime.now(UTC)
    outcome = await service.import_ported_numbers(
        batches(
            (
                False,
                [
                    row(2, "8 903 555-01-01", "megafon", now - 9 * DAY),
                    row(3, "+7903", "megafon", now - DAY),
                    row(4, "+74951234567", "megafon", now - DAY),
                ],
            ),
            (
                True,  # only the first message's flag counts
                [
                    row(5, "+79035550102", "Mega Fon", now - DAY),
                    row(6, "+79035550103", "", now - DAY),
                    row(7, "+79035550104", "megafon", None),
                    row(8, "+79035550105", "megafon", now + DAY),
                    row(9, "+79035550106", "mts", now - DAY),
                ],
            ),
        )
    )
    assert (outcome.imported, outcome.rejected, outcome.committed) == (2, 6, True)
    assert [(e.line, e.message.split(" ")[0]) for e in outcome.errors] == [
        (3, "phone_number"),
        (4, "phone_number"),
        (5, "recipient_operator_id"),
        (6, "recipient_operator_id"),
        (7, "ported_at"),
        (8, "ported_at"),
    ]
    messages = {e.line: e.message for e in outcome.errors}
    assert "not a mobile number" in messages[4]
    assert "is missing" in messages[7] and "in the future" in messages[8]
    stored = await store.ported_number(NUMBER)
    assert stored is not None and (stored.operator_id, stored.origin) == (
        "megafon",
        RouteOrigin.IMPORT,
    )
    assert (await store.ported_number("+79035550106")) is not None


async def test_an_all_or_nothing_import_with_one_bad_row_stores_nothing(
    store: GatewayStore, sms: RecordingSms
) -> None:
    service = gateway(store, Operators(), sms=sms)
    now = datetime.now(UTC)
    outcome = await service.import_ported_numbers(
        batches(
            (True, [row(2, NUMBER, "megafon", now - DAY)]),
            (False, [row(3, "+79035550102", "megafon", None)]),
        )
    )
    assert (outcome.imported, outcome.rejected, outcome.committed) == (0, 1, False)
    assert [e.line for e in outcome.errors] == [3]
    assert await store.ported_number(NUMBER) is None

    clean = await service.import_ported_numbers(
        batches((True, [row(2, NUMBER, "megafon", now - DAY)]))
    )
    assert (clean.imported, clean.rejected, clean.committed) == (1, 0, True)


async def test_a_number_is_replaced_only_by_a_later_porting_date(
    store: GatewayStore, sms: RecordingSms
) -> None:
    service = gateway(store, Operators(), sms=sms)
    now = datetime.now(UTC)

    async def load(*rows: PortedRowInput) -> Any:
        return await service.import_ported_numbers(batches((False, list(rows))))

    await load(row(2, NUMBER, "megafon", now - 5 * DAY))
    same_date = await load(row(2, NUMBER, "mts", now - 5 * DAY))
    older = await load(row(2, NUMBER, "mts", now - 6 * DAY))
    assert (same_date.imported, same_date.unchanged, older.imported) == (0, 1, 0)
    stored = await store.ported_number(NUMBER)
    assert stored is not None and stored.operator_id == "megafon"

    later = await load(row(2, NUMBER, "mts", now - 4 * DAY))
    assert later.imported == 1
    stored = await store.ported_number(NUMBER)
    assert stored is not None and stored.operator_id == "mts"
    # within one file too: the later of two rows for a number wins, whatever their order
    both = await load(
        row(2, "+79035550102", "beeline", now - DAY), row(3, "+79035550102", "mts", now - 2 * DAY)
    )
    stored = await store.ported_number("+79035550102")
    assert stored is not None and stored.operator_id == "beeline"
    assert both.imported == 1
    # a remembered hint (dated when learned) gives way to a later import only
    await store.remember_hint("+79035550107", "megafon", now - DAY)
    await load(row(2, "+79035550107", "mts", now - 2 * DAY))
    stored = await store.ported_number("+79035550107")
    assert stored is not None and stored.origin is RouteOrigin.HINT


async def test_an_oversized_batch_refuses_the_whole_import(
    store: GatewayStore, sms: RecordingSms
) -> None:
    service = gateway(store, Operators(), sms=sms)
    now = datetime.now(UTC)
    rows = [row(i + 2, f"+7903{i:07d}", "megafon", now - DAY) for i in range(10_001)]
    with pytest.raises(InvalidInput, match="at most 10000"):
        await service.import_ported_numbers(
            batches((False, [row(1, NUMBER, "megafon", now - DAY)]), (False, rows))
        )
    assert await store.ported_number(NUMBER) is None


async def test_row_errors_are_capped_but_all_counted(
    store: GatewayStore, sms: RecordingSms
) -> None:
    service = gateway(store, Operators(), sms=sms)
    rows = [row(i + 2, "bad", "megafon", None) for i in range(1_005)]
    outcome = await service.import_ported_numbers(batches((False, rows)))
    assert (outcome.rejected, len(outcome.errors)) == (1_005, 1_000)
    assert outcome.errors[-1].line == 1_001


# --- "has the number changed hands?" ------------------------------------------------------------


async def identified_user(
    service: GatewayService, sms: RecordingSms, user: str = "u1", phone: str = NUMBER
) -> Any:
    done = await run(service, sms, user, phone)
    assert done.state is State.IDENTIFIED
    return done


async def test_reassignment_is_asked_of_the_identifying_operator_since_identification(
    store: GatewayStore, sms: RecordingSms
) -> None:
    clock = FakeClock()
    operators = Operators(
        answers={("beeline", NUMBER): identified("beeline")},
        reassigned={"beeline": Reassignment.NOT_REASSIGNED},
    )
    service = gateway(store, operators, sms=sms, clock=clock)
    done = await identified_user(service, sms)
    assert done.identified_at == done.completed_at

    check = await service.check_number_reassigned("u1")

    assert (check.reassignment, check.operator_id, check.phone_number) == (
        Reassignment.NOT_REASSIGNED,
        "beeline",
        NUMBER,
    )
    assert check.since == done.identified_at
    assert operators.reassigned_calls == [("beeline", NUMBER, done.identified_at)]

    # revoked later: still asked since the identification, not since the revocation
    clock.advance(3600)
    notice = TerminationNotice(
        1, "ev-1", "beeline", "alpha", "IC-beeline", TerminationKind.PORTED_OUT
    )
    assert (await service.apply_notice(notice)).revoked == 1
    operators.reassigned["beeline"] = Reassignment.REASSIGNED
    revoked = await service.check_number_reassigned("u1")
    assert (revoked.reassignment, revoked.since) == (Reassignment.REASSIGNED, done.identified_at)
    await service.close()


async def test_reassignment_after_a_hint_asks_the_recipient(
    store: GatewayStore, sms: RecordingSms
) -> None:
    operators = Operators(
        answers={
            ("beeline", NUMBER): hint("beeline", "megafon"),
            ("megafon", NUMBER): identified("megafon"),
        },
        reassigned={"megafon": Reassignment.NO_DATA},
    )
    service = gateway(store, operators, sms=sms)
    await identified_user(service, sms)
    check = await service.check_number_reassigned("u1")
    assert (check.reassignment, check.operator_id) == (Reassignment.NO_DATA, "megafon")
    await service.close()


async def test_reassignment_needs_an_identification_that_was_identified(
    store: GatewayStore, sms: RecordingSms
) -> None:
    service = gateway(store, Operators(), sms=sms)
    with pytest.raises(IdentificationNotFound):
        await service.check_number_reassigned("nobody")
    await service.start_identification("u1", NUMBER)
    with pytest.raises(NeverIdentified, match="AWAITING_CODE"):
        await service.check_number_reassigned("u1")
    done = await run(service, sms, "u2")  # beeline: NO_SUBSCRIBER
    assert done.state is State.NOT_COMPLETED
    with pytest.raises(NeverIdentified, match="NOT_COMPLETED"):
        await service.check_number_reassigned("u2")
    await service.close()


@pytest.mark.parametrize(
    ("failure", "error", "text"),
    [
        (UNAVAILABLE, OperatorUnreachable, "could not be asked"),
        (OperatorRefused("beeline: no agreement"), AgreementMissing, "no active"),
    ],
)
async def test_an_operator_that_cannot_answer_the_reassignment_question(
    store: GatewayStore, sms: RecordingSms, failure: Exception, error: type[Exception], text: str
) -> None:
    operators = Operators(
        answers={("beeline", NUMBER): identified("beeline")}, reassigned={"beeline": failure}
    )
    service = gateway(store, operators, sms=sms)
    await identified_user(service, sms)
    with pytest.raises(error, match=text):
        await service.check_number_reassigned("u1")
    operators.known.discard("beeline")  # the gateway no longer has beeline's address
    with pytest.raises(OperatorUnreachable, match="not configured"):
        await service.check_number_reassigned("u1")
    await service.close()


# --- over gRPC, with fake registries ------------------------------------------------------------


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Harness]:
    async with running_gateway(tmp_path) as harness:
        yield harness


@pytest.fixture
async def admin(gw: Harness) -> AsyncIterator[gateway_pb2_grpc.GatewayAdminServiceStub]:
    async with open_channel(gw.address, identity=ADMIN) as channel:
        yield gateway_pb2_grpc.GatewayAdminServiceStub(channel)


async def resolve(admin: Any, phone: str) -> gateway_pb2.ResolveOperatorResponse:
    reply: gateway_pb2.ResolveOperatorResponse = await admin.ResolveOperator(
        gateway_pb2.ResolveOperatorRequest(phone_number=phone)
    )
    return reply


async def test_a_hint_over_grpc_reaches_the_recipient_registry(gw: Harness, admin: Any) -> None:
    server, megafon = await start_registry("megafon", gw.megafon_port)
    try:
        gw.registry.behaviour[NUMBER] = "ported:megafon"
        done = await gw.identify("u1", NUMBER)
        assert done.operator_id == "megafon"
        [(_, donor_request, _)] = gw.registry.requests
        [(caller, recipient_request, phone)] = megafon.requests
        assert (caller, recipient_request, phone) == (
            "spiffe://idmesh.local/messenger/alpha",
            donor_request + "-hint",
            NUMBER,
        )
        route = await resolve(admin, NUMBER)
        assert (route.operator_id, route.source, route.configured) == (
            "megafon",
            gateway_pb2.ROUTE_SOURCE_OPERATOR_HINT,
            True,
        )
    finally:
        await server.stop(None)


async def test_an_import_that_sets_no_mode_commits_the_valid_rows_as_first_published(
    gw: Harness, admin: Any
) -> None:
    """all_or_nothing (the first field) and mode (the later one) agree on one rule: the import is
    all or nothing only when one of them says so; both unset commit the valid rows."""
    now = datetime.now(UTC)

    def request(line: int, phone: str, **fields: Any) -> gateway_pb2.ImportPortedNumbersRequest:
        row = gateway_pb2.PortedNumber(
            line=line, phone_number=phone, recipient_operator_id="megafon"
        )
        row.ported_at.FromDatetime(now - DAY)
        bad = gateway_pb2.PortedNumber(line=line + 1, phone_number="+7903")
        return gateway_pb2.ImportPortedNumbersRequest(rows=[row, bad], **fields)

    async def send(req: gateway_pb2.ImportPortedNumbersRequest) -> Any:
        async def one() -> AsyncIterator[gateway_pb2.ImportPortedNumbersRequest]:
            yield req

        return await admin.ImportPortedNumbers(one())

    refused = await send(request(2, NUMBER, all_or_nothing=True))
    assert (refused.imported, refused.rejected, refused.committed) == (0, 1, False)
    with pytest.raises(grpc.aio.AioRpcError) as contradiction:
        await send(request(2, NUMBER, all_or_nothing=True, mode=bulk_pb2.IMPORT_MODE_VALID_ROWS))
    assert contradiction.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "all_or_nothing is set and mode is IMPORT_MODE_VALID_ROWS" in (
        contradiction.value.details() or ""
    )
    assert (await resolve(admin, NUMBER)).source == gateway_pb2.ROUTE_SOURCE_NUMBERING_PLAN

    unset = await send(request(2, NUMBER))
    assert (unset.imported, unset.rejected, unset.committed) == (1, 1, True)
    assert [e.line for e in unset.errors] == [3]
    assert (await resolve(admin, NUMBER)).source == gateway_pb2.ROUTE_SOURCE_PORTED_NUMBERS


async def test_import_and_resolve_over_grpc(gw: Harness, admin: Any) -> None:
    now = datetime.now(UTC)

    def pb_row(line: int, phone: str, operator: str, ported_at: datetime | None) -> Any:
        return gateway_pb2.PortedNumber(
            line=line,
            phone_number=phone,
            recipient_operator_id=operator,
            ported_at=to_timestamp(ported_at),
        )

    async def stream(
        mode: bulk_pb2.ImportMode,
    ) -> AsyncIterator[gateway_pb2.ImportPortedNumbersRequest]:
        yield gateway_pb2.ImportPortedNumbersRequest(
            mode=mode, rows=[pb_row(2, NUMBER, "megafon", now - DAY)]
        )
        yield gateway_pb2.ImportPortedNumbersRequest(
            rows=[pb_row(3, MTS_NUMBER, "mts", now - DAY), pb_row(4, "+7903", "megafon", None)]
        )

    refused = await admin.ImportPortedNumbers(stream(bulk_pb2.IMPORT_MODE_ALL_OR_NOTHING))
    assert (refused.imported, refused.rejected, refused.committed) == (0, 1, False)
    assert [(e.line, "phone_number" in e.message) for e in refused.errors] == [(4, True)]
    assert (await resolve(admin, NUMBER)).source == gateway_pb2.ROUTE_SOURCE_NUMBERING_PLAN

    reply = await admin.ImportPortedNumbers(stream(bulk_pb2.IMPORT_MODE_VALID_ROWS))
    assert (reply.imported, reply.rejected, reply.committed) == (2, 1, True)
    again = await admin.ImportPortedNumbers(stream(bulk_pb2.IMPORT_MODE_VALID_ROWS))
    assert (again.imported, again.unchanged, again.rejected) == (0, 2, 1)  # same dates
    route = await resolve(admin, "8 903 555 01 01")
    assert (route.phone_number, route.operator_id, route.source, route.configured) == (
        NUMBER,
        "megafon",
        gateway_pb2.ROUTE_SOURCE_PORTED_NUMBERS,
        True,
    )
    mts = await resolve(admin, MTS_NUMBER)
    assert (mts.operator_id, mts.source, mts.configured) == (
        "mts",
        gateway_pb2.ROUTE_SOURCE_PORTED_NUMBERS,
        False,
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:  # mts is not configured: no SMS
        await gw.start("u1", MTS_NUMBER)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "served by mts" in (refused.value.details() or "")


async def test_resolve_reports_plan_and_unknown_routes(admin: Any) -> None:
    plan = await resolve(admin, "+79161234568")  # MTS in the plan, no IDMESH_CARRIERS entry
    assert (plan.operator_id, plan.source, plan.configured) == (
        "",
        gateway_pb2.ROUTE_SOURCE_NUMBERING_PLAN,
        False,
    )
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await resolve(admin, "+74951234567")
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("identity", "code"),
    [
        (None, grpc.StatusCode.UNAUTHENTICATED),
        (FRONTEND, grpc.StatusCode.PERMISSION_DENIED),
        (Caller(Kind.MESSENGER, "alpha"), grpc.StatusCode.PERMISSION_DENIED),
        (Caller(Kind.MESSENGER, "beta", Role.ADMIN), grpc.StatusCode.PERMISSION_DENIED),
        (Caller(Kind.OPERATOR, "beeline", Role.ADMIN), grpc.StatusCode.PERMISSION_DENIED),
    ],
)
async def test_only_this_messengers_admin_may_use_the_admin_service(
    gw: Harness, identity: Caller | None, code: grpc.StatusCode
) -> None:
    async def one_batch() -> AsyncIterator[gateway_pb2.ImportPortedNumbersRequest]:
        yield gateway_pb2.ImportPortedNumbersRequest()

    async with open_channel(gw.address, identity=identity) as channel:
        stub = gateway_pb2_grpc.GatewayAdminServiceStub(channel)
        for call in (
            stub.ResolveOperator(gateway_pb2.ResolveOperatorRequest(phone_number=NUMBER)),
            stub.ImportPortedNumbers(one_batch()),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await call
            assert failed.value.code() == code


async def test_check_number_reassigned_over_grpc(gw: Harness) -> None:
    async def ask(user: str) -> Any:
        return await gw.stub.CheckNumberReassigned(
            gateway_pb2.CheckNumberReassignedRequest(user_id=user), timeout=5
        )

    done = await gw.identify("u1", NUMBER)
    gw.registry.reassignment = registry_pb2.REASSIGNMENT_STATUS_REASSIGNED
    reply = await ask("u1")
    assert (reply.reassignment, reply.operator_id, reply.phone_number) == (
        gateway_pb2.NUMBER_REASSIGNMENT_REASSIGNED,
        "beeline",
        NUMBER,
    )
    assert reply.since == done.completed_at
    [request] = gw.registry.reassigned_requests
    assert (request.phone_number, request.since) == (NUMBER, done.completed_at)

    gw.registry.reassignment = grpc.StatusCode.UNAVAILABLE
    failed = await _status(ask("u1"))
    assert failed.code() == grpc.StatusCode.UNAVAILABLE
    assert "operator beeline could not be asked" in (failed.details() or "")

    assert (await _status(ask("nobody"))).code() == grpc.StatusCode.NOT_FOUND
    await gw.start("u1", NUMBER)
    assert (await _status(ask("u1"))).code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_an_unreachable_operator_is_unavailable_with_a_clear_message(gw: Harness) -> None:
    server, _ = await start_registry("megafon", gw.megafon_port)
    await gw.identify("u1", "+79261234567")
    await server.stop(None)  # megafon goes away after the identification
    failed = await _status(
        gw.stub.CheckNumberReassigned(
            gateway_pb2.CheckNumberReassignedRequest(user_id="u1"), timeout=5
        )
    )
    assert failed.code() == grpc.StatusCode.UNAVAILABLE
    assert "megafon" in (failed.details() or "") and "try again" in (failed.details() or "")


async def _status(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await call
    return failed.value


# --- the CLI ------------------------------------------------------------------------------------


async def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    args = cli.build_parser().parse_args(argv)
    code = await args.func(args)
    return code, capsys.readouterr().out


async def test_the_cli_imports_a_csv_in_batches_and_routes(
    gw: Harness, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv_file = tmp_path / "ported.csv"
    csv_file.write_text(
        "phone_number,recipient_operator_id,ported_at\n"
        "+79035550101,megafon,2024-05-14\n"
        "+79035550102,megafon,14.05.2024\n"
        "+79035550103,megafon,2024-05-15\n"
    )
    base = ["--address", gw.address, "--insecure", "-m", "alpha"]
    code, out = await run_cli(
        ["gateway", "import-ported", *base, str(csv_file), "--all-or-nothing", "--batch-size", "1"],
        capsys,
    )
    assert code == 1
    assert "committed: False" in out and "line 3: ported_at" in out and "not a date" in out

    code, out = await run_cli(
        ["gateway", "import-ported", *base, str(csv_file), "--batch-size", "2"], capsys
    )
    assert code == 1 and "committed: False" in out  # all or nothing is the default

    valid_rows = [*base, str(csv_file), "--valid-rows", "--batch-size", "2", "--json"]
    code, out = await run_cli(["gateway", "import-ported", *valid_rows], capsys)
    assert code == 1  # a row was rejected
    assert '"imported": 2' in out and '"unchanged": 0' in out
    code, out = await run_cli(["gateway", "import-ported", *valid_rows], capsys)
    assert '"imported": 0' in out and '"unchanged": 2' in out  # the reply's field

    code, out = await run_cli(["gateway", "route", *base, "-p", "+79035550103"], capsys)
    assert code == 0
    assert "operator_id: megafon" in out and "ROUTE_SOURCE_PORTED_NUMBERS" in out


async def test_the_cli_refuses_a_file_without_the_header(
    gw: Harness, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv_file = tmp_path / "ported.csv"
    csv_file.write_text("+79035550101,megafon,2024-05-14\n")
    with pytest.raises(cli.CliError, match="header"):
        await run_cli(
            [
                "gateway",
                "import-ported",
                "--address",
                gw.address,
                "--insecure",
                "-m",
                "alpha",
                str(csv_file),
            ],
            capsys,
        )
