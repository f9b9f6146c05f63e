"""Bulk import (ImportSubscribers): row checks, the fast number path, both modes, duplicates,
conflicts, the large-import path, and that staging neither blocks nor leaks."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from idmesh.registry.v1 import registry_pb2

from services.common.errors import InvalidInput
from services.common.identity import Caller, Kind, Role
from services.common.phone import InvalidPhoneNumber, _parse_mobile
from services.common.timeutil import to_iso
from services.operator_registry import bulk
from services.operator_registry.bulk import (
    ImportBatch,
    ImportMode,
    MobileNumbers,
    RawRow,
    activation_text,
)
from services.operator_registry.domain import ContractState
from services.operator_registry.ports import RegistryStore
from services.operator_registry.service import RegistryService
from services.operator_registry.store import SqliteRegistryStore

from .conftest import NUMBER, OPERATOR, START, FakeClock
from .test_grpc_api import ALPHA, Client, start_server, status_of

ACTIVATED = int((START - timedelta(days=30)).timestamp())


def row(line: int, phone: str, contract: str, seconds: int | None = ACTIVATED) -> RawRow:
    return (line, phone, contract, seconds, 0)


def numbered(count: int, *, first_line: int = 2, base: int = 1_000_000) -> list[RawRow]:
    return [row(first_line + i, f"+7903{base + i:07d}", f"C-{base + i}") for i in range(count)]


async def stream(
    *batches: Sequence[RawRow], mode: ImportMode | None = None
) -> AsyncIterator[ImportBatch]:
    for rows in batches:
        yield ImportBatch(mode=mode, rows=rows)


async def contracts(store: RegistryStore) -> int:
    """Contracts in the store (asked through a staging area: the port has no count of them)."""
    staging = await store.import_staging().open()
    try:
        return await staging.count_contracts()
    finally:
        await staging.close()


# --- the fast number path -----------------------------------------------------------------------


def _verdict(check: object, number: str) -> tuple[str, str]:
    try:
        return "ok", check(number)  # type: ignore[operator]
    except InvalidPhoneNumber as exc:
        return "invalid", exc.message


def test_the_fast_path_gives_parse_mobiles_answers() -> None:
    rnd = random.Random(7)
    numbers = [f"+79{rnd.randrange(10**9):09d}" for _ in range(3000)]
    numbers += [f"+7{rnd.randrange(10**10):010d}" for _ in range(3000)]  # RU and KZ, any type
    numbers += [f"+7930{d:06d}" for d in range(0, 10**6, 997)]  # the deepest mobile branch
    numbers += [f"+77{rnd.randrange(10**9):09d}" for _ in range(500)]  # Kazakhstan
    numbers += ["+74951234567", "+78001234567", "8 903 123-45-67", "+7 903 1234567", "garbage"]
    fast = MobileNumbers()
    for number in numbers + numbers:  # the second round is answered from the cache
        assert _verdict(fast.check, number) == _verdict(_parse_mobile, number), number


def test_activation_text_is_the_storage_form() -> None:
    for seconds in (631_152_000, 1_700_000_000, 1_700_086_399, 1_735_689_600):
        for nanos in (0, 123_456_789):
            expected = to_iso(
                datetime.fromtimestamp(seconds, UTC) + timedelta(microseconds=nanos // 1000)
            )
            assert activation_text(seconds, nanos) == expected


# --- the use case -------------------------------------------------------------------------------


async def test_an_all_or_nothing_import_of_valid_rows_commits_them_all(
    service: RegistryService, store: RegistryStore
) -> None:
    rows = numbered(2500)
    outcome = await service.import_subscribers(
        stream(rows[:1000], rows[1000:], mode=ImportMode.ALL_OR_NOTHING)
    )
    assert (outcome.imported, outcome.rejected, outcome.committed) == (2500, 0, True)
    assert outcome.errors == ()
    subscriber = await service.get_subscriber("+79031000007")
    assert subscriber.contract.contract_id == "C-1000007"
    assert subscriber.contract.state is ContractState.ACTIVE
    assert subscriber.contract.activated_at == datetime.fromtimestamp(ACTIVATED, UTC)
    assert await contracts(store) == 2500


async def test_invalid_rows_are_reported_by_line_and_all_or_nothing_commits_nothing(
    service: RegistryService, store: RegistryStore
) -> None:
    rows = numbered(50)
    rows[4] = row(6, "+74951234567", "C-land")  # a landline
    rows[9] = row(11, "+7903100000", "C-short")  # too short
    rows[19] = row(21, "+79031999999", "has space")  # contract id
    rows[29] = row(31, "+79031999998", "C-nodate", None)  # no activation time
    rows[39] = row(41, "+79031999997", "C-future", int(START.timestamp()) + 86_400)
    outcome = await service.import_subscribers(stream(rows))
    assert outcome.mode is ImportMode.ALL_OR_NOTHING  # unspecified means all or nothing
    assert (outcome.imported, outcome.rejected, outcome.committed) == (0, 5, False)
    assert [e.line for e in outcome.errors] == [6, 11, 21, 31, 41]
    messages = [e.message for e in outcome.errors]
    assert "not a mobile number" in messages[0]
    assert "+7495" in messages[0] and "4951234567" not in messages[0]  # masked
    assert "not a valid number" in messages[1] or "not a phone number" in messages[1]
    assert "contract_id 'has space' is not valid" in messages[2]
    assert "activated_at is missing" in messages[3]
    assert "not plausible" in messages[4]
    assert await contracts(store) == 0


async def test_valid_rows_mode_commits_the_valid_rows_and_reports_the_rest(
    service: RegistryService, store: RegistryStore
) -> None:
    rows = numbered(30)
    rows[2] = row(4, "+74951234567", "C-land")
    outcome = await service.import_subscribers(stream(rows, mode=ImportMode.VALID_ROWS))
    assert (outcome.imported, outcome.rejected, outcome.committed) == (29, 1, True)
    assert [e.line for e in outcome.errors] == [4]
    assert await contracts(store) == 29


async def test_duplicates_within_the_file_keep_the_first_row(
    service: RegistryService, store: RegistryStore
) -> None:
    rows = [
        row(2, "+79031000001", "C-1"),
        row(3, "+79031000002", "C-2"),
        row(4, "+79031000001", "C-3"),  # the number of line 2
        row(5, "+79031000004", "C-2"),  # the contract id of line 3
    ]
    outcome = await service.import_subscribers(
        stream(rows[:3], rows[3:], mode=ImportMode.VALID_ROWS)
    )
    assert (outcome.imported, outcome.rejected) == (2, 2)
    assert [(e.line, e.message) for e in outcome.errors] == [
        (
            4,
            "phone_number +7903*****01 is also on line 2: a number holds one contract; "
            "keep one of the rows",
        ),
        (5, "contract_id 'C-2' is also on line 3: contract ids are unique"),
    ]
    assert (await service.get_subscriber("+79031000001")).contract.contract_id == "C-1"


async def test_conflicts_with_existing_contracts_are_reported(
    service: RegistryService, store: RegistryStore
) -> None:
    await service.create_subscriber(NUMBER, "EXISTING-1")
    await service.create_subscriber("+79051112200", "EXISTING-2")
    await service.terminate_contract("+79051112200")
    rows = [
        row(2, NUMBER, "C-new"),  # the number has an active contract
        row(3, "+79031000003", "EXISTING-1"),  # the contract id is taken
        row(4, "+79051112200", "C-again"),  # a terminated number may get a new contract
    ]
    refused = await service.import_subscribers(stream(rows))
    assert (refused.imported, refused.rejected, refused.committed) == (0, 2, False)
    assert [e.line for e in refused.errors] == [2, 3]
    assert "already has an active contract (EXISTING-1)" in refused.errors[0].message
    assert "contract_id 'EXISTING-1' is already taken" in refused.errors[1].message
    partial = await service.import_subscribers(stream(rows, mode=ImportMode.VALID_ROWS))
    assert (partial.imported, partial.rejected, partial.committed) == (1, 2, True)
    again = await service.get_subscriber("+79051112200")
    assert (again.contract.contract_id, again.contract.state) == ("C-again", ContractState.ACTIVE)


async def test_only_the_first_thousand_errors_are_listed_but_all_are_counted(
    service: RegistryService,
) -> None:
    rows = [row(i + 2, "+74951234567", f"C-{i}") for i in range(1500)]
    outcome = await service.import_subscribers(stream(rows[:700], rows[700:]))
    assert outcome.rejected == 1500
    assert len(outcome.errors) == 1000
    assert [e.line for e in outcome.errors] == list(range(2, 1002))


async def test_a_message_with_too_many_rows_is_refused_and_nothing_is_committed(
    service: RegistryService, store: RegistryStore
) -> None:
    with pytest.raises(InvalidInput, match="at most 10000 rows per message"):
        await service.import_subscribers(
            stream(numbered(10), numbered(10_001, base=2_000_000), mode=ImportMode.VALID_ROWS)
        )
    assert await contracts(store) == 0


async def test_an_empty_stream_imports_nothing(service: RegistryService) -> None:
    outcome = await service.import_subscribers(stream())
    assert (outcome.imported, outcome.rejected, outcome.committed) == (0, 0, True)


@pytest.mark.sqlite_only
@pytest.mark.parametrize("mode", [ImportMode.ALL_OR_NOTHING, ImportMode.VALID_ROWS])
async def test_a_large_import_rebuilds_the_indexes_and_keeps_them(
    service: RegistryService,
    store: RegistryStore,
    monkeypatch: pytest.MonkeyPatch,
    mode: ImportMode,
) -> None:
    monkeypatch.setattr(bulk, "REBUILD_MIN_ROWS", 100)
    assert isinstance(store, SqliteRegistryStore)
    before = await store._db.fetchall(
        "SELECT name, sql FROM sqlite_schema WHERE tbl_name = 'contracts' ORDER BY name"
    )
    outcome = await service.import_subscribers(stream(numbered(500), mode=mode))
    assert (outcome.imported, outcome.committed) == (500, True)
    after = await store._db.fetchall(
        "SELECT name, sql FROM sqlite_schema WHERE tbl_name = 'contracts' ORDER BY name"
    )
    assert [tuple(r) for r in after] == [tuple(r) for r in before]
    with pytest.raises(Exception, match="already has an active contract"):
        await service.create_subscriber("+79031000001", "C-other")


async def test_valid_rows_commit_in_chunks_next_to_a_larger_table(
    store: RegistryStore, clock: FakeClock
) -> None:
    service = RegistryService(store, operator_id="beeline", clock=clock)
    await service.import_subscribers(stream(numbered(300, base=5_000_000)))
    importer = bulk.SubscriberImport(store.import_staging, clock=clock, merge_chunk_rows=7)
    rows = numbered(40)
    rows[10] = row(12, "+79035000001", "C-x")  # conflicts with the first import
    outcome = await importer.run(stream(rows, mode=ImportMode.VALID_ROWS))
    assert (outcome.imported, outcome.rejected, outcome.committed) == (39, 1, True)
    assert await contracts(store) == 339


async def test_a_contract_created_while_an_import_streams_is_caught_at_the_merge(
    service: RegistryService, store: RegistryStore
) -> None:
    """Staging takes no lock: other writes go on while a file streams in. A contract created
    meanwhile for a number in the file is a conflict, found at the merge."""
    release = asyncio.Event()
    staged = asyncio.Event()

    async def slow_stream() -> AsyncIterator[ImportBatch]:
        yield ImportBatch(mode=ImportMode.ALL_OR_NOTHING, rows=numbered(20))
        staged.set()
        await release.wait()

    task = asyncio.create_task(service.import_subscribers(slow_stream()))
    await asyncio.wait_for(staged.wait(), 5)
    # the first batch is staged; the registry still takes writes
    await asyncio.wait_for(service.create_subscriber("+79031000005", "OTHER-5"), 5)
    release.set()
    outcome = await asyncio.wait_for(task, 10)
    assert (outcome.imported, outcome.committed) == (0, False)
    assert [e.line for e in outcome.errors] == [7]
    assert await contracts(store) == 1


async def test_a_race_between_the_check_and_the_merge_commits_nothing(
    service: RegistryService, store: RegistryStore
) -> None:
    staging = await store.import_staging().open()
    try:
        checked = bulk.RowChecker(FakeClock()).check(numbered(5))
        await staging.stage(checked)
        await staging.mark_duplicates()
        await staging.mark_conflicts()
        assert await staging.counts() == (5, 0)
        await service.create_subscriber("+79031000003", "RACE-1")  # after the check
        assert await staging.merge_all(rebuild_indexes=False) is None
        assert await staging.counts() == (4, 1)
        assert (await staging.problems(10))[0][:2] == (5, "active_contract")
    finally:
        await staging.close()
    assert await contracts(store) == 1


async def test_a_cancelled_import_commits_nothing(
    service: RegistryService, store: RegistryStore
) -> None:
    staged = asyncio.Event()

    async def endless() -> AsyncIterator[ImportBatch]:
        yield ImportBatch(mode=ImportMode.VALID_ROWS, rows=numbered(100))
        staged.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(service.import_subscribers(endless()))
    await asyncio.wait_for(staged.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await contracts(store) == 0


# --- over gRPC ----------------------------------------------------------------------------------


@pytest.fixture
async def rpc(service: RegistryService) -> AsyncIterator[Client]:
    server = await start_server(service)
    assert server.port is not None
    client = Client(server.port)
    yield client
    await client.close()
    await server.stop(None)


def _pb_rows(rows: Sequence[RawRow]) -> list[registry_pb2.SubscriberRow]:
    result = []
    for line, phone, contract, seconds, _ in rows:
        item = registry_pb2.SubscriberRow(line=line, phone_number=phone, contract_id=contract)
        if seconds is not None:
            item.activated_at.seconds = seconds
        result.append(item)
    return result


async def _requests(
    mode: registry_pb2.ImportMode, *batches: Sequence[RawRow]
) -> AsyncIterator[registry_pb2.ImportSubscribersRequest]:
    for rows in batches:
        yield registry_pb2.ImportSubscribersRequest(mode=mode, rows=_pb_rows(rows))


async def test_import_subscribers_over_grpc_streams_batches_and_reports_rows(
    rpc: Client,
) -> None:
    rows = numbered(3000)
    rows[100] = row(102, "+74951234567", "C-land")
    reply = await rpc.admin().ImportSubscribers(
        _requests(registry_pb2.IMPORT_MODE_VALID_ROWS, rows[:1000], rows[1000:2000], rows[2000:]),
        timeout=30,
    )
    assert (reply.imported, reply.rejected, reply.committed) == (2999, 1, True)
    assert [(e.line, "not a mobile number" in e.message) for e in reply.errors] == [(102, True)]
    got = await rpc.admin().GetSubscriber(
        registry_pb2.GetSubscriberRequest(phone_number="+79031000000"), timeout=5
    )
    assert got.subscriber.contract_id == "C-1000000"


@pytest.mark.parametrize(
    "identity",
    [None, ALPHA, Caller(Kind.OPERATOR, "megafon", Role.ADMIN), Caller(Kind.OPERATOR, OPERATOR)],
)
async def test_import_subscribers_is_for_this_operators_admin_only(
    rpc: Client, identity: Caller | None, store: RegistryStore
) -> None:
    failed = await status_of(
        rpc.admin(identity).ImportSubscribers(
            _requests(registry_pb2.IMPORT_MODE_VALID_ROWS, numbered(10)), timeout=10
        )
    )
    assert failed.code() in {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}
    assert await contracts(store) == 0


async def test_too_many_rows_in_one_message_is_invalid_argument(rpc: Client) -> None:
    failed = await status_of(
        rpc.admin().ImportSubscribers(
            _requests(registry_pb2.IMPORT_MODE_ALL_OR_NOTHING, numbered(10_001)), timeout=30
        )
    )
    assert failed.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "rows has 10001 items: at most 10000 rows are allowed" in (failed.details() or "")
