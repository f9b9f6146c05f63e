"""Configuration from the environment, and the process: starts, serves, stops on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from idmesh.notifier.v1 import notifier_pb2, notifier_pb2_grpc

from services.common.channels import open_channel
from services.common.config import ConfigError, Env
from services.common.identity import Caller, Kind
from services.common.storage import Engine
from services.notifier.config import NotifierConfig
from tests.notifier.support import event

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_follow_the_documented_values() -> None:
    cfg = NotifierConfig.from_env(
        Env({"IDMESH_DB_PATH": "/tmp/x.db", "IDMESH_INSECURE_DEV_MODE": "true"})
    )
    assert cfg.server.bind == "127.0.0.1:50060"
    assert cfg.store.db_synchronous == "NORMAL"
    assert cfg.store.engine is Engine.SQLITE
    assert cfg.streams.buffer == 256
    assert cfg.streams.batch == 256
    assert cfg.streams.slow_consumer_seconds == 10
    assert cfg.streams.progress_interval_seconds == 5
    assert cfg.sla_check_seconds == 60
    assert cfg.delivery.sla_warning == timedelta(hours=12)
    assert cfg.delivery.sla_limit == timedelta(hours=24)
    assert cfg.delivery.retention == timedelta(days=7)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({}, "IDMESH_DB_PATH: required"),
        ({"IDMESH_RETENTION_DAYS": "6"}, "IDMESH_RETENTION_DAYS: must be at least 7"),
        ({"IDMESH_DB_SYNCHRONOUS": "sometimes"}, "IDMESH_DB_SYNCHRONOUS"),
        ({"IDMESH_DATABASE_URL": "mysql://db/x"}, "IDMESH_DATABASE_URL: expected a postgresql"),
        ({"IDMESH_STREAM_BUFFER": "0"}, "IDMESH_STREAM_BUFFER"),
        ({"IDMESH_STREAM_BATCH": "0"}, "IDMESH_STREAM_BATCH"),
        ({"IDMESH_STREAM_BATCH": "1001"}, "IDMESH_STREAM_BATCH"),
        ({"IDMESH_SLA_WARNING_SECONDS": "90000"}, "IDMESH_SLA_WARNING_SECONDS"),
    ],
)
def test_bad_configuration_names_the_variable(environ: dict[str, str], message: str) -> None:
    base = {"IDMESH_INSECURE_DEV_MODE": "true"}
    if environ:
        base["IDMESH_DB_PATH"] = "/tmp/x.db"
    with pytest.raises(ConfigError, match=message):
        NotifierConfig.from_env(Env({**base, **environ}))


def test_a_database_url_puts_the_store_on_postgresql_without_a_file() -> None:
    cfg = NotifierConfig.from_env(
        Env(
            {
                "IDMESH_DATABASE_URL": "postgresql://idmesh:secret@db:5432/notifier",
                "IDMESH_INSECURE_DEV_MODE": "true",
            }
        )
    )
    assert cfg.store.engine is Engine.POSTGRESQL
    assert cfg.store.db_path is None
    assert "secret" not in cfg.store.describe()


class Process:
    """`python -m services.notifier` with JSON logs on stderr, read line by line."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[dict[str, Any]] = []

    @classmethod
    async def start(cls, tmp_path: Path, **env: str) -> Process:
        environ = {
            **os.environ,
            "IDMESH_DB_PATH": str(tmp_path / "notifier.db"),
            "IDMESH_BIND": "127.0.0.1:0",
            "IDMESH_INSECURE_DEV_MODE": "true",
            "IDMESH_LOG_FORMAT": "json",
            "IDMESH_SHUTDOWN_GRACE_SECONDS": "1",
            **{f"IDMESH_{key}": value for key, value in env.items()},
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.notifier",
            cwd=ROOT,
            env=environ,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(process)

    async def until(self, event: str) -> dict[str, Any]:
        assert self.process.stderr is not None
        while True:
            raw = await self.process.stderr.readline()
            assert raw, f"the process ended before {event!r}: {self.lines}"
            try:
                line = json.loads(raw)
            except ValueError:
                continue  # not ours: grpc core and Python warnings write plain text to stderr
            self.lines.append(line)
            if line.get("event") == event:
                return dict(line)

    async def serving_port(self) -> int:
        port = int((await self.until("server.listening"))["port"])
        await self.until("server.serving")
        return port

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


async def test_process_serves_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    proc = await Process.start(tmp_path)
    try:
        async with asyncio.timeout(15):
            port = await proc.serving_port()
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                reply = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service="idmesh.notifier.v1.NotifierService")
                )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            proc.process.send_signal(signal.SIGTERM)
            await proc.until("server.stopped")
            assert await proc.process.wait() == 0
    finally:
        await proc.kill()


@pytest.mark.parametrize(
    ("failpoint", "stored"),
    [("notifier.publish.before_commit", False), ("notifier.publish.after_commit", True)],
)
async def test_killed_while_taking_a_publish_the_retry_stores_the_event_exactly_once(
    tmp_path: Path, failpoint: str, stored: bool
) -> None:
    """Killed before the commit nothing is stored; killed after it the event is stored but the
    publisher never heard so; either way the publisher's retry leaves exactly one event."""
    batch = [event(), event()]
    request = notifier_pb2.PublishRequest(events=batch)
    crashing = await Process.start(tmp_path, FAILPOINTS=failpoint)
    try:
        async with asyncio.timeout(15):
            port = await crashing.serving_port()
            async with open_channel(
                f"127.0.0.1:{port}", identity=Caller(Kind.OPERATOR, "beeline")
            ) as channel:
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    await notifier_pb2_grpc.NotifierServiceStub(channel).Publish(request)
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
            assert await crashing.process.wait() == 137
    finally:
        await crashing.kill()

    restarted = await Process.start(tmp_path)
    try:
        async with asyncio.timeout(15):
            port = await restarted.serving_port()
            operator = open_channel(f"127.0.0.1:{port}", identity=Caller(Kind.OPERATOR, "beeline"))
            messenger = open_channel(f"127.0.0.1:{port}", identity=Caller(Kind.MESSENGER, "alpha"))
            async with operator, messenger:
                retry = await notifier_pb2_grpc.NotifierServiceStub(operator).Publish(request)
                status = await notifier_pb2_grpc.NotifierServiceStub(messenger).GetDeliveryStatus(
                    notifier_pb2.GetDeliveryStatusRequest(messenger_id="alpha")
                )
    finally:
        await restarted.kill()
    assert (retry.accepted, retry.duplicates) == ((0, 2) if stored else (2, 0))
    assert status.head_seq == 2
