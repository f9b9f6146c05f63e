"""Which failures mean "the store cannot be reached", and what a store's availability does at
each transition: one log line, the gauge, the watchers, a probe that brings it back."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
from pathlib import Path

import asyncpg
import pytest
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from services.common import failpoints
from services.common.availability import (
    StoreAvailability,
    guarded,
    log_failure,
    postgres_unreachable,
    sqlite_unreachable,
)
from services.common.backoff import Backoff
from services.common.db import Database
from services.common.errors import CommitOutcomeUnknown, StoreUnavailable
from services.common.failpoints import Action, InjectedFault, parse, term
from services.common.logging import get_logger
from tests.eventually import eventually


def _sqlite_error(code: int, message: str) -> sqlite3.OperationalError:
    exc = sqlite3.OperationalError(message)
    exc.sqlite_errorcode = code
    return exc


@pytest.mark.parametrize(
    ("exc", "unreachable"),
    [
        (_sqlite_error(5, "database is locked"), True),
        (_sqlite_error(8, "attempt to write a readonly database"), True),
        (_sqlite_error(1032, "attempt to write a readonly database"), True),  # READONLY_DBMOVED
        (_sqlite_error(10, "disk I/O error"), True),
        (_sqlite_error(13, "database or disk is full"), True),
        (_sqlite_error(14, "unable to open database file"), True),
        (_sqlite_error(1, "no such table: contracts"), False),  # a bug, not an outage
        (sqlite3.IntegrityError("UNIQUE constraint failed"), False),
        (InjectedFault("failpoint"), True),
        (ValueError("bad"), False),
    ],
)
def test_sqlite_failures_that_mean_the_file_cannot_be_used(
    exc: BaseException, unreachable: bool
) -> None:
    assert sqlite_unreachable(exc) is unreachable


@pytest.mark.parametrize(
    ("exc", "unreachable"),
    [
        (ConnectionRefusedError(111, "Connect call failed"), True),
        (ConnectionResetError(104, "reset"), True),
        (asyncpg.ConnectionDoesNotExistError("connection was closed in the middle"), True),
        (asyncpg.CannotConnectNowError("the database system is starting up"), True),
        (asyncpg.AdminShutdownError("terminating connection due to administrator command"), True),
        (asyncpg.CrashShutdownError("terminating connection because of crash"), True),
        (asyncpg.ReadOnlySQLTransactionError("cannot execute INSERT in a read-only txn"), True),
        (asyncpg.InterfaceError("cannot perform operation: connection is closed"), True),
        (InjectedFault("failpoint"), True),
        (asyncpg.InterfaceError("cannot call Transaction.commit(): already committed"), False),
        (asyncpg.UniqueViolationError("duplicate key"), False),
        (asyncpg.QueryCanceledError("canceling statement due to statement timeout"), False),
        (asyncpg.UndefinedTableError("relation does not exist"), False),
        (OSError("disk full"), False),  # raised by a transaction's own code: not the server
        (TimeoutError(), False),  # a statement's own timeout
    ],
)
def test_postgresql_failures_that_mean_the_server_cannot_be_used(
    exc: BaseException, unreachable: bool
) -> None:
    assert postgres_unreachable(exc) is unreachable


@pytest.mark.parametrize(
    "exc",
    [
        OSError(113, "No route to host"),
        socket.gaierror(-2, "Name or service not known"),
        TimeoutError(),  # no pooled connection in time, or connecting timed out
        asyncpg.TargetServerAttributeNotMatched("none of the hosts is read-write"),
    ],
)
def test_while_connecting_any_socket_error_means_the_server_cannot_be_reached(
    exc: BaseException,
) -> None:
    assert postgres_unreachable(exc, connecting=True)
    assert not postgres_unreachable(ValueError("bad"), connecting=True)


def test_a_failpoint_armed_with_error_raises_a_lost_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert parse("store.commit.after_commit=error") == {
        "store.commit.after_commit": Action(error=True)
    }
    assert term("store.commit.after_commit", Action(error=True, probability=0.5)) == (
        "store.commit.after_commit=50%error"
    )
    monkeypatch.setenv(failpoints.ENV, "store.commit.before_commit=error")
    failpoints.reload()
    try:
        with pytest.raises(InjectedFault):
            failpoints.failpoint("store.commit.before_commit")
        failpoints.failpoint("store.commit.after_commit")  # not armed: nothing
    finally:
        monkeypatch.delenv(failpoints.ENV)
        failpoints.reload()


async def test_a_store_going_away_and_back_is_said_once_each_way() -> None:
    answers = asyncio.Event()
    probes = 0

    async def probe() -> None:
        nonlocal probes
        probes += 1
        if not answers.is_set():
            raise ConnectionRefusedError(111, "refused")

    store = StoreAvailability("test:once", probe, backoff=Backoff(initial=0.01, maximum=0.02))
    seen: list[bool] = []
    store.watch(seen.append)
    refused_before = REGISTRY.get_sample_value(
        "idmesh_store_unavailable_total", {"store": "test:once"}
    )
    with capture_logs() as logs:
        errors = [store.refuse(ConnectionRefusedError(111, "refused")) for _ in range(5)]
        assert all(type(e) is StoreUnavailable and e.retry_after for e in errors)
        assert store.refuse(OSError(), outcome_unknown=True).reason == "COMMIT_OUTCOME_UNKNOWN"
        assert REGISTRY.get_sample_value("idmesh_store_available", {"store": "test:once"}) == 0
        await eventually(lambda: probes >= 2, what="the probe to try again")
        assert not store.available
        answers.set()
        await eventually(lambda: store.available, what="the probe to find the store back")
    await store.close()
    assert seen == [False, True]
    assert [entry["event"] for entry in logs] == ["store.unavailable", "store.available"]
    assert REGISTRY.get_sample_value("idmesh_store_available", {"store": "test:once"}) == 1
    refused = REGISTRY.get_sample_value("idmesh_store_unavailable_total", {"store": "test:once"})
    assert refused == (refused_before or 0) + 6
    assert isinstance(store.refuse(OSError(), outcome_unknown=True), CommitOutcomeUnknown)
    await store.close()


async def test_a_locked_sqlite_file_refuses_writes_and_a_write_after_brings_it_back(
    tmp_path: Path,
) -> None:
    db = await Database.open(tmp_path / "s.db", ["CREATE TABLE t (x INTEGER);"])
    try:
        holder = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            with pytest.raises(StoreUnavailable):
                await db.run(lambda conn: conn.execute("INSERT INTO t VALUES (1)"))
            assert not db.availability.available
            # reads of committed data go on (WAL): they neither fail nor say it is back
            assert await db.fetchall("SELECT x FROM t") == []
            assert not db.availability.available
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        await db.run(lambda conn: conn.execute("INSERT INTO t VALUES (2)"))
        assert db.availability.available
    finally:
        await db.close()


async def test_guarded_work_raises_store_unavailable_for_an_unreachable_store_only() -> None:
    class Staging:
        async def open(self) -> Staging:
            return self

        async def lost(self) -> None:
            raise asyncpg.ConnectionDoesNotExistError("connection was closed in the middle")

        async def bad(self) -> None:
            raise ValueError("a bug")

        def name(self) -> str:
            return "staging"

    store = StoreAvailability("test:guard", _never_probed)

    def refusal(exc: BaseException) -> StoreUnavailable | None:
        return store.refuse(exc) if postgres_unreachable(exc) else None

    staging = await guarded(Staging(), refusal).open()
    assert staging.name() == "staging"
    with pytest.raises(StoreUnavailable):
        await staging.lost()  # the guard survives open() returning the unguarded object
    assert not store.available
    with pytest.raises(ValueError, match="a bug"):
        await staging.bad()
    await store.close()


async def _never_probed() -> None:
    raise ConnectionRefusedError(111, "refused")


def test_a_background_failure_of_an_unreachable_store_is_a_warning_without_a_trace() -> None:
    """An unreachable store is a transient fault (its coming and going is reported once): a
    background job that fails on it logs a warning with the message; anything else is an error
    with its traceback."""
    logger = get_logger("idmesh.test")
    with capture_logs() as logs:
        log_failure(logger, "job.failed", StoreUnavailable("the database cannot be reached"))
        log_failure(logger, "job.failed", RuntimeError("a bug"), job="sweep")
    transient, bug = logs
    assert transient["log_level"] == "warning" and "exc_info" not in transient
    assert transient["error"] == "the database cannot be reached"
    assert bug["log_level"] == "error" and isinstance(bug["exc_info"], RuntimeError)
    assert bug["job"] == "sweep"
