"""A registry whose database goes away: every call that needs it is answered UNAVAILABLE
(STORE_UNAVAILABLE, with RetryInfo), never INTERNAL; health goes NOT_SERVING and SERVING again,
said once in the log and in the metrics; the calls after succeed and nothing acknowledged is
lost. A commit whose outcome was lost (COMMIT_OUTCOME_UNKNOWN) is settled by the caller's retry
with its idempotency key. On PostgreSQL the server is crashed (`pg_ctl stop -m immediate`) and
started again; on SQLite the file is locked by another process past the busy timeout, or its
disk is full.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from idmesh.registry.v1 import registry_pb2, registry_pb2_grpc
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from services.common import failpoints
from services.common.channels import open_channel
from services.common.config import Env
from services.common.identity import Caller, Kind, Role
from services.common.server import GrpcServer
from services.common.status import ErrorDetails, error_details
from services.common.storage import StoreSettings, watching_stores
from services.localmesh.process import free_port
from services.operator_registry.grpc_api import ERRORS
from services.operator_registry.main import add_servicers, open_store
from services.operator_registry.service import RegistryService
from tests.eventually import eventually
from tests.postgres import PostgresCluster

from .conftest import NUMBER, OPERATOR, OTHER_NUMBER, FakeClock

ROOT = Path(__file__).resolve().parents[2]
ALPHA = Caller(Kind.MESSENGER, "alpha")
ADMIN = Caller(Kind.OPERATOR, OPERATOR, Role.ADMIN)
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass
class Registry:
    """A registry serving on a real port, its store watched by its health, and stubs over
    channels without the retry policy (so that a test sees each refusal)."""

    server: GrpcServer
    clock: FakeClock
    registry: registry_pb2_grpc.RegistryServiceStub
    admin: registry_pb2_grpc.RegistryAdminServiceStub
    health: health_pb2_grpc.HealthStub

    async def status(self) -> int:
        reply = await self.health.Check(health_pb2.HealthCheckRequest(), timeout=5)
        return int(reply.status)

    async def verify(self, key: str, number: str = NUMBER) -> registry_pb2.VerifySubscriberResponse:
        request = registry_pb2.VerifySubscriberRequest(idempotency_key=key, phone_number=number)
        reply: registry_pb2.VerifySubscriberResponse = await self.registry.VerifySubscriber(
            request, timeout=30
        )
        return reply


@contextlib.asynccontextmanager
async def serving_registry(settings: StoreSettings) -> AsyncIterator[Registry]:
    server = GrpcServer(name="operator_registry", bind="127.0.0.1:0", errors=ERRORS)
    clock = FakeClock()
    channels: list[grpc.aio.Channel] = []

    def channel(identity: Caller | None) -> grpc.aio.Channel:
        opened = open_channel(
            f"127.0.0.1:{server.port}", identity=identity, options=[("grpc.enable_retries", 0)]
        )
        channels.append(opened)
        return opened

    with watching_stores(server.watch_store):
        async with open_store(settings) as store:
            add_servicers(server, RegistryService(store, operator_id=OPERATOR, clock=clock))
            await server.start()
            await server.set_serving()
            try:
                yield Registry(
                    server,
                    clock,
                    registry_pb2_grpc.RegistryServiceStub(channel(ALPHA)),
                    registry_pb2_grpc.RegistryAdminServiceStub(channel(ADMIN)),
                    health_pb2_grpc.HealthStub(channel(None)),
                )
            finally:
                for opened in channels:
                    await opened.close()
                await server.stop(None)


async def refusal(call: Awaitable[Any]) -> tuple[grpc.StatusCode, ErrorDetails]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value.code(), error_details(caught.value)


def assert_store_unavailable(refused: tuple[grpc.StatusCode, ErrorDetails]) -> None:
    code, details = refused
    assert (code, details.reason, details.domain) == (
        grpc.StatusCode.UNAVAILABLE,
        "STORE_UNAVAILABLE",
        "idmesh",
    )
    assert details.retry_delay is not None and details.retry_delay.total_seconds() > 0


def gauge(store: str) -> float | None:
    return REGISTRY.get_sample_value("idmesh_store_available", {"store": store})


async def seed(registry: Registry) -> None:
    await registry.admin.RegisterMessenger(
        registry_pb2.RegisterMessengerRequest(messenger_id="alpha")
    )
    await registry.admin.CreateSubscriber(
        registry_pb2.CreateSubscriberRequest(phone_number=NUMBER, contract_id="BEE-1")
    )


def outage_calls(registry: Registry) -> list[Callable[[], Awaitable[Any]]]:
    """One call of each kind: a verification, an admin write, reads."""
    return [
        lambda: registry.verify(f"k-{uuid.uuid4().hex[:12]}"),
        lambda: registry.admin.CreateSubscriber(
            registry_pb2.CreateSubscriberRequest(phone_number=OTHER_NUMBER, contract_id="BEE-2"),
            timeout=30,
        ),
        lambda: registry.admin.GetSubscriber(
            registry_pb2.GetSubscriberRequest(phone_number=NUMBER), timeout=30
        ),
        lambda: registry.admin.ListMessengers(registry_pb2.ListMessengersRequest(), timeout=30),
        lambda: registry.admin.ImportSubscribers(  # a bulk import: a connection of its own
            iter(
                [
                    registry_pb2.ImportSubscribersRequest(
                        mode=registry_pb2.IMPORT_MODE_VALID_ROWS,
                        rows=[
                            registry_pb2.SubscriberRow(
                                line=1, phone_number="+79051112299", contract_id="BULK-1"
                            )
                        ],
                    )
                ]
            ),
            timeout=30,
        ),
    ]


# --- PostgreSQL: the server crashes and comes back ----------------------------------------------


async def test_a_postgresql_crash_is_answered_unavailable_and_ridden_through(
    tmp_path: Path,
) -> None:
    with PostgresCluster.create() as pg:
        settings = StoreSettings(database_url=pg.url)
        with capture_logs() as logs:
            async with serving_registry(settings) as registry:
                await seed(registry)
                acknowledged = await registry.verify("before-the-crash")
                assert acknowledged.result == registry_pb2.VERIFICATION_RESULT_IDENTIFIED
                assert await registry.status() == SERVING

                pg.stop("immediate")
                for call in outage_calls(registry) * 2:
                    assert_store_unavailable(await refusal(call()))
                assert await registry.status() == NOT_SERVING
                assert gauge("postgresql:operator_registry") == 0

                pg.start()
                await eventually(
                    lambda: _is(registry.status(), SERVING), within=30, what="SERVING again"
                )
                assert gauge("postgresql:operator_registry") == 1
                again = await registry.verify("before-the-crash")
                assert again.identification_code == acknowledged.identification_code
                assert again.identified_at == acknowledged.identified_at
                await registry.admin.CreateSubscriber(
                    registry_pb2.CreateSubscriberRequest(
                        phone_number=OTHER_NUMBER, contract_id="BEE-2"
                    )
                )
                got = await registry.admin.GetSubscriber(
                    registry_pb2.GetSubscriberRequest(phone_number=NUMBER)
                )
                assert [b.identification_code for b in got.subscriber.bindings] == [
                    acknowledged.identification_code
                ]
    events = [entry["event"] for entry in logs]
    assert events.count("store.unavailable") == 1, events
    assert events.count("store.available") == 1, events
    assert "rpc.unexpected_error" not in events


async def _is(status: Awaitable[int], expected: int) -> bool:
    try:
        return await status == expected
    except grpc.aio.AioRpcError:
        return False


async def test_a_commit_sent_on_a_dead_connection_is_settled_by_the_retry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The worst moment: the transaction is written, COMMIT about to go, and the server dies.
    The caller hears COMMIT_OUTCOME_UNKNOWN; its retry with the same key, once the server is
    back, finds that nothing was committed and answers now."""
    with PostgresCluster.create() as pg:
        settings = StoreSettings(database_url=pg.url)
        async with serving_registry(settings) as registry:
            await seed(registry)
            monkeypatch.setenv(failpoints.ENV, "store.commit.before_commit=sleep(1500)")
            failpoints.reload()
            try:
                call = registry.verify("across-the-crash")
                seen = ""

                def sleeping() -> bool:
                    nonlocal seen
                    seen += capsys.readouterr().err
                    return '"failpoint.sleep"' in seen

                task = asyncio.ensure_future(call)
                await eventually(sleeping, what="the COMMIT held at the failpoint")
                pg.stop("immediate")
                code, details = await refusal(task)
            finally:
                monkeypatch.delenv(failpoints.ENV)
                failpoints.reload()
            assert (code, details.reason) == (
                grpc.StatusCode.UNAVAILABLE,
                "COMMIT_OUTCOME_UNKNOWN",
            )
            assert details.retry_delay is not None
            pg.start()
            await eventually(lambda: _is(registry.status(), SERVING), within=30, what="SERVING")
            registry.clock.advance(60)
            answer = await registry.verify("across-the-crash")
            assert answer.result == registry_pb2.VERIFICATION_RESULT_IDENTIFIED
            # nothing of the first attempt was committed: the binding is the retry's, made now
            assert answer.identified_at.ToDatetime(tzinfo=registry.clock.now().tzinfo) == (
                registry.clock.now()
            )


# --- both engines: the commit's answer lost on the way back -------------------------------------


@pytest.fixture
def settings(tmp_path: Path, store_env: dict[str, str]) -> StoreSettings:
    environ = {f"IDMESH_{key}": value for key, value in store_env.items()}
    return StoreSettings.from_env(Env({"IDMESH_DB_PATH": str(tmp_path / "registry.db"), **environ}))


async def test_a_commit_whose_outcome_was_lost_is_found_by_the_retry_with_its_key(
    settings: StoreSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serving_registry(settings) as registry:
        await seed(registry)
        monkeypatch.setenv(failpoints.ENV, "store.commit.after_commit=error")
        failpoints.reload()
        try:
            code, details = await refusal(registry.verify("lost-answer"))
        finally:
            monkeypatch.delenv(failpoints.ENV)
            failpoints.reload()
        assert (code, details.reason, details.domain) == (
            grpc.StatusCode.UNAVAILABLE,
            "COMMIT_OUTCOME_UNKNOWN",
            "idmesh",
        )
        assert details.retry_delay is not None and details.retry_delay.total_seconds() > 0
        committed_at = registry.clock.now()
        registry.clock.advance(60)
        # the key is taken: the first attempt was committed ...
        code, details = await refusal(registry.verify("lost-answer", OTHER_NUMBER))
        assert (code, details.reason) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "IDEMPOTENCY_KEY_REUSED",
        )
        # ... and the retry returns what it answered, not a new answer
        answer = await registry.verify("lost-answer")
        assert answer.result == registry_pb2.VERIFICATION_RESULT_IDENTIFIED
        assert answer.identified_at.ToDatetime(tzinfo=committed_at.tzinfo) == committed_at
        await eventually(lambda: _is(registry.status(), SERVING), what="SERVING after the retry")


# --- SQLite: a file locked past the busy timeout, a full disk -----------------------------------


@pytest.mark.sqlite_only
async def test_a_sqlite_file_locked_by_another_process_is_answered_unavailable(
    settings: StoreSettings,
) -> None:
    assert settings.db_path is not None
    store = f"sqlite:{settings.db_path.name}"
    async with serving_registry(settings) as registry:
        await seed(registry)
        holder = sqlite3.connect(settings.db_path, isolation_level=None)
        try:
            holder.execute("BEGIN EXCLUSIVE")  # held past the service's 5 s busy timeout
            assert_store_unavailable(
                await refusal(
                    registry.admin.CreateSubscriber(
                        registry_pb2.CreateSubscriberRequest(
                            phone_number=OTHER_NUMBER, contract_id="BEE-2"
                        ),
                        timeout=30,
                    )
                )
            )
            assert await registry.status() == NOT_SERVING
            assert gauge(store) == 0
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        await eventually(lambda: _is(registry.status(), SERVING), within=20, what="SERVING")
        assert gauge(store) == 1
        await registry.admin.CreateSubscriber(
            registry_pb2.CreateSubscriberRequest(phone_number=OTHER_NUMBER, contract_id="BEE-2")
        )
        assert (await registry.verify("after-the-lock")).identification_code


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MB tmpfs of the test's own (the machine's tests run as root, CI included)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


async def test_a_sqlite_file_on_a_full_disk_is_answered_unavailable(small_disk: Path) -> None:
    settings = StoreSettings(db_path=small_disk / "registry.db")
    async with serving_registry(settings) as registry:
        await seed(registry)
        acknowledged = await registry.verify("before-the-disk-filled")
        filler = small_disk / "filler"
        with filler.open("wb") as out, contextlib.suppress(OSError):
            while True:  # every free block taken
                out.write(b"\0" * 65536)
                out.flush()
                os.fsync(out.fileno())
        refused = []
        for index in range(4):  # enough writes to need a new page of the WAL
            with contextlib.suppress(AssertionError):
                refused.append(
                    await refusal(
                        registry.admin.CreateSubscriber(
                            registry_pb2.CreateSubscriberRequest(
                                phone_number=f"+7905111220{index}", contract_id=f"FULL-{index}"
                            ),
                            timeout=30,
                        )
                    )
                )
        assert refused, "no write was refused on a full disk"
        for each in refused:
            assert_store_unavailable(each)
        assert await registry.status() == NOT_SERVING
        filler.unlink()
        await eventually(lambda: _is(registry.status(), SERVING), within=20, what="SERVING")
        again = await registry.verify("before-the-disk-filled")
        assert again.identification_code == acknowledged.identification_code
        await registry.admin.CreateSubscriber(
            registry_pb2.CreateSubscriberRequest(phone_number=OTHER_NUMBER, contract_id="BEE-2")
        )


# --- a real process: the runner watches the store its wiring opens ------------------------------


@pytest.mark.sqlite_only
async def test_a_registry_process_is_not_serving_while_its_file_is_locked(
    settings: StoreSettings, tmp_path: Path
) -> None:
    assert settings.db_path is not None
    port = free_port()
    env = {
        **os.environ,
        "IDMESH_DB_PATH": str(settings.db_path),
        "IDMESH_BIND": f"127.0.0.1:{port}",
        "IDMESH_INSECURE_DEV_MODE": "true",
        "IDMESH_OPERATOR_ID": OPERATOR,
        "IDMESH_NOTIFIER_ADDRESS": "127.0.0.1:9",  # no notifier: the relay only retries
        "IDMESH_LOG_FORMAT": "json",
    }
    log_path = tmp_path / "registry.log"
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.operator_registry",
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    channels = [
        open_channel(f"127.0.0.1:{port}", identity=who, options=[("grpc.enable_retries", 0)])
        for who in (None, ADMIN)
    ]
    health = health_pb2_grpc.HealthStub(channels[0])
    admin = registry_pb2_grpc.RegistryAdminServiceStub(channels[1])

    async def status() -> int:
        reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
        return int(reply.status)

    try:
        await eventually(lambda: _is(status(), SERVING), within=30, what="the process SERVING")
        holder = sqlite3.connect(settings.db_path, isolation_level=None)
        try:
            holder.execute("BEGIN EXCLUSIVE")
            for index in range(2):
                assert_store_unavailable(
                    await refusal(
                        admin.CreateSubscriber(
                            registry_pb2.CreateSubscriberRequest(
                                phone_number=OTHER_NUMBER, contract_id=f"BEE-{index}"
                            ),
                            timeout=30,
                        )
                    )
                )
            assert await status() == NOT_SERVING
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        await eventually(lambda: _is(status(), SERVING), within=20, what="SERVING again")
        await admin.CreateSubscriber(
            registry_pb2.CreateSubscriberRequest(phone_number=OTHER_NUMBER, contract_id="BEE-9"),
            timeout=30,
        )
    finally:
        for channel in channels:
            await channel.close()
        process.terminate()
        await asyncio.wait_for(process.wait(), 15)
    events = [line for line in log_path.read_text().splitlines() if '"store.' in line]
    assert [json.loads(line)["event"] for line in events] == [
        "store.unavailable",
        "store.available",
    ]
