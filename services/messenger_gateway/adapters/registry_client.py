"""The operators' registries over gRPC: one cached channel per operator, closed at shutdown.

Status codes become the service layer's terms:
    OK                 -> OperatorAnswer(IDENTIFIED | NO_SUBSCRIBER)
    PERMISSION_DENIED  -> OperatorAnswer(REFUSED): no identification agreement with us
    DEADLINE_EXCEEDED  -> OperatorAnswer(TIMED_OUT): the window ended
    anything else      -> OperatorUnavailable (retried while the window lasts)
A NO_SUBSCRIBER answer carries the donor's hint (recipient_operator_id) when the number was
ported out. CheckNumberReassigned: PERMISSION_DENIED -> OperatorRefused, other failures ->
OperatorUnavailable.

VerifySubscriber is only called on a connected channel: while an operator cannot be reached, each
pending verification waits on the channel's readiness (an asyncio.Event, a few hundred bytes)
rather than holding an RPC in gRPC (about 20 KB each: 10,000 verifications pending on an
unreachable operator took a gateway from 80 MB to 320 MB; see docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from datetime import datetime

import grpc
from idmesh.registry.v1 import registry_pb2, registry_pb2_grpc

from services.common.channels import open_channel
from services.common.identity import Caller
from services.common.logging import get_logger
from services.common.status import error_details
from services.common.timeutil import to_timestamp
from services.common.tls import TlsFiles
from services.messenger_gateway.identification.model import (
    OperatorAnswer,
    OperatorRefused,
    OperatorUnavailable,
    Reassignment,
    Verdict,
)

log = get_logger("idmesh.gateway.registry")

_REASSIGNMENT = {
    registry_pb2.REASSIGNMENT_STATUS_REASSIGNED: Reassignment.REASSIGNED,
    registry_pb2.REASSIGNMENT_STATUS_NOT_REASSIGNED: Reassignment.NOT_REASSIGNED,
    registry_pb2.REASSIGNMENT_STATUS_NO_DATA: Reassignment.NO_DATA,
}
# How long one attempt waits for an unconnected operator's channel before it counts as
# unavailable (gRPC's own connect timeout is 20 s); the service layer then retries with backoff.
CONNECT_WAIT_SECONDS = 20.0
_EXPECTED_TRANSIENT = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.CANCELLED,
}


class RegistryClients:
    def __init__(
        self, addresses: Mapping[str, str], *, identity: Caller, tls: TlsFiles | None = None
    ) -> None:
        self._addresses = dict(addresses)
        self._identity = identity
        self._tls = tls
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[str, registry_pb2_grpc.RegistryServiceStub] = {}
        self._ready: dict[str, asyncio.Event] = {}
        self._watchers: dict[str, asyncio.Task[None]] = {}

    def knows(self, operator_id: str) -> bool:
        return operator_id in self._addresses

    def _stub(self, operator_id: str) -> registry_pb2_grpc.RegistryServiceStub:
        stub = self._stubs.get(operator_id)
        if stub is None:
            channel = open_channel(
                self._addresses[operator_id], identity=self._identity, tls=self._tls
            )
            self._channels[operator_id] = channel
            self._ready[operator_id] = asyncio.Event()
            self._watchers[operator_id] = asyncio.create_task(
                self._watch(channel, self._ready[operator_id]),
                name=f"registry-channel-{operator_id}",
            )
            stub = self._stubs[operator_id] = registry_pb2_grpc.RegistryServiceStub(channel)
        return stub

    @staticmethod
    async def _watch(channel: grpc.aio.Channel, ready: asyncio.Event) -> None:
        """Keep `ready` set exactly while the channel is READY (asking it to connect when idle)."""
        while True:
            state = channel.get_state(try_to_connect=True)
            if state is grpc.ChannelConnectivity.READY:
                ready.set()
            else:
                ready.clear()
            await channel.wait_for_state_change(state)

    async def _connected(self, operator_id: str, time_limit: float) -> None:
        """Return once the operator's channel is READY; OperatorUnavailable after
        min(time_limit, CONNECT_WAIT_SECONDS) without."""
        ready = self._ready[operator_id]
        if ready.is_set():
            return
        try:
            async with asyncio.timeout(max(0.0, min(time_limit, CONNECT_WAIT_SECONDS))):
                await ready.wait()
        except TimeoutError:
            state = self._channels[operator_id].get_state()
            raise OperatorUnavailable(f"{operator_id}: not connected ({state.name})") from None

    async def verify(
        self, operator_id: str, *, idempotency_key: str, phone_number: str, time_limit: float
    ) -> OperatorAnswer:
        stub = self._stub(operator_id)
        await self._connected(operator_id, time_limit)
        try:
            reply = await stub.VerifySubscriber(
                # request_id: the key's field that registries of every age read.
                registry_pb2.VerifySubscriberRequest(
                    request_id=idempotency_key, phone_number=phone_number
                ),
                timeout=time_limit,
            )
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.PERMISSION_DENIED:
                return OperatorAnswer(Verdict.REFUSED, operator_id)
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                return OperatorAnswer(Verdict.TIMED_OUT, operator_id)
            if code not in _EXPECTED_TRANSIENT:
                # INVALID_ARGUMENT, UNAUTHENTICATED, UNIMPLEMENTED, INTERNAL...: a bug or a
                # misconfiguration on one side; retried, since it may be fixed within the window
                log.error(
                    "registry.unexpected_status",
                    operator_id=operator_id,
                    status=code.name,
                    details=exc.details(),
                )
            asked = error_details(exc).retry_delay  # RESOURCE_EXHAUSTED: RetryInfo
            raise OperatorUnavailable(
                f"{operator_id}: {code.name}: {exc.details()}",
                retry_after=asked.total_seconds() if asked is not None else 0.0,
            ) from None
        if reply.result == registry_pb2.VERIFICATION_RESULT_IDENTIFIED:
            if not reply.identification_code:
                raise OperatorUnavailable(f"{operator_id}: IDENTIFIED without identification code")
            return OperatorAnswer(
                Verdict.IDENTIFIED, reply.operator_id or operator_id, reply.identification_code
            )
        if reply.result == registry_pb2.VERIFICATION_RESULT_NO_SUBSCRIBER:
            if reply.recipient_operator_id:
                log.info(
                    "registry.number_ported",
                    operator_id=operator_id,
                    recipient_operator_id=reply.recipient_operator_id,
                )
            return OperatorAnswer(
                Verdict.NO_SUBSCRIBER,
                reply.operator_id or operator_id,
                recipient_operator_id=reply.recipient_operator_id,
            )
        raise OperatorUnavailable(f"{operator_id}: unknown verification result {reply.result}")

    async def check_reassigned(
        self, operator_id: str, *, phone_number: str, since: datetime, time_limit: float
    ) -> Reassignment:
        """CheckNumberReassigned at the operator. PERMISSION_DENIED -> OperatorRefused; any
        other failure (down, deadline, a refused request) -> OperatorUnavailable."""
        stub = self._stub(operator_id)
        try:
            reply = await stub.CheckNumberReassigned(
                registry_pb2.CheckNumberReassignedRequest(
                    phone_number=phone_number, since=to_timestamp(since)
                ),
                timeout=time_limit,
            )
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.PERMISSION_DENIED:
                raise OperatorRefused(f"{operator_id}: {exc.details()}") from None
            if code not in _EXPECTED_TRANSIENT and code != grpc.StatusCode.DEADLINE_EXCEEDED:
                log.error(
                    "registry.unexpected_status",
                    operator_id=operator_id,
                    status=code.name,
                    details=exc.details(),
                )
            raise OperatorUnavailable(f"{operator_id}: {code.name}: {exc.details()}") from None
        answer = _REASSIGNMENT.get(reply.status)
        if answer is None:
            raise OperatorUnavailable(f"{operator_id}: unknown reassignment status {reply.status}")
        return answer

    async def close(self) -> None:
        watchers = list(self._watchers.values())
        channels = list(self._channels.values())
        self._watchers.clear()
        self._ready.clear()
        self._channels.clear()
        self._stubs.clear()
        for watcher in watchers:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        for channel in channels:
            await channel.close()
