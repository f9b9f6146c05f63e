"""Test support for the notifier: a settable clock, events, a running notifier with stubs per
caller, and helpers that read streams and wait with a bound."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
from idmesh.events.v1 import events_pb2
from idmesh.notifier.v1 import notifier_pb2, notifier_pb2_grpc

from services.common.channels import open_channel
from services.common.config import Env
from services.common.identity import Caller, Kind
from services.common.timeutil import to_timestamp
from services.notifier.config import NotifierConfig
from services.notifier.service import NotifierService

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self, start: datetime = T0) -> None:
        self._now = start

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> None:
        self._now += delta


def event(
    messenger_id: str = "alpha",
    *,
    operator_id: str = "beeline",
    event_id: str | None = None,
    phone_number: str = "+79031234567",
    reason: int = events_pb2.TERMINATION_REASON_CONTRACT_ENDED,
) -> events_pb2.ContractTerminated:
    return events_pb2.ContractTerminated(
        event_id=event_id or str(uuid.uuid4()),
        operator_id=operator_id,
        messenger_id=messenger_id,
        phone_number=phone_number,
        identification_code=f"code-{uuid.uuid4().hex}",
        reason=reason,  # type: ignore[arg-type]
        occurred_at=to_timestamp(T0),
    )


def config(tmp_path: Path, **overrides: str) -> NotifierConfig:
    environ = {
        "IDMESH_DB_PATH": str(tmp_path / "notifier.db"),
        "IDMESH_BIND": "127.0.0.1:0",
        "IDMESH_INSECURE_DEV_MODE": "true",
        "IDMESH_PROGRESS_INTERVAL_SECONDS": "30",
        **{f"IDMESH_{key}": value for key, value in overrides.items()},
    }
    return NotifierConfig.from_env(Env(environ))


@dataclass
class Notifier:
    """A running notifier and stubs for callers."""

    service: NotifierService
    port: int
    clock: FakeClock
    config: NotifierConfig
    _channels: dict[Caller, grpc.aio.Channel] = field(default_factory=dict)

    def stub(self, caller: Caller) -> notifier_pb2_grpc.NotifierServiceStub:
        if caller not in self._channels:
            self._channels[caller] = open_channel(f"127.0.0.1:{self.port}", identity=caller)
        return notifier_pb2_grpc.NotifierServiceStub(self._channels[caller])

    def operator(self, operator_id: str = "beeline") -> notifier_pb2_grpc.NotifierServiceStub:
        return self.stub(Caller(Kind.OPERATOR, operator_id))

    def messenger(self, messenger_id: str = "alpha") -> notifier_pb2_grpc.NotifierServiceStub:
        return self.stub(Caller(Kind.MESSENGER, messenger_id))

    async def publish(
        self, *events: events_pb2.ContractTerminated, operator_id: str = "beeline"
    ) -> notifier_pb2.PublishResponse:
        reply: notifier_pb2.PublishResponse = await self.operator(operator_id).Publish(
            notifier_pb2.PublishRequest(events=events)
        )
        return reply

    def subscribe(
        self,
        messenger_id: str = "alpha",
        after_seq: int = 0,
        *,
        caller: Caller | None = None,
        timeout: float = 60.0,
        max_batch_size: int = 1000,
    ) -> Any:
        """Open a stream as `caller` (by default the messenger itself), with a deadline, asking
        for batches of up to max_batch_size notices (0: one notice per message, in `notice`)."""
        return self.stub(caller or Caller(Kind.MESSENGER, messenger_id)).Subscribe(
            notifier_pb2.SubscribeRequest(
                messenger_id=messenger_id, after_seq=after_seq, max_batch_size=max_batch_size
            ),
            timeout=timeout,
        )

    async def close_channels(self) -> None:
        for channel in self._channels.values():
            await channel.close()


async def read_notices(call: Any, count: int, *, within: float = 5.0) -> list[notifier_pb2.Notice]:
    """The next `count` notices of a stream (progress marks skipped), within a bound."""
    notices: list[notifier_pb2.Notice] = []
    async with asyncio.timeout(within):
        while len(notices) < count:
            item = await call.read()
            if item is grpc.aio.EOF:
                break
            notices.extend(item.notices)
            if item.HasField("notice"):
                notices.append(item.notice)
    return notices


def trailers(error: grpc.aio.AioRpcError) -> dict[str, str]:
    return {key: str(value) for key, value in (error.trailing_metadata() or ())}
