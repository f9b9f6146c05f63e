"""A mesh in one process for the fuzz tests: a registry, the notifier and a gateway, each a real
grpc.aio server on port 0 with its real service layer over its own SQLite file, and callers
with the identities each RPC's authorization asks for (the insecure dev mode: the identity
travels in metadata, as in the other in-process tests).

Every RPC is called generically, from its descriptor (`Mesh.call`), so that the fuzz test walks
every method of every service without a hand-written list. `snapshot` dumps every table of a
service's store, to prove that a refused request changed nothing.

What runs in the background is kept out of the way of the snapshots: the registry has no outbox
relay, the gateway's notice consumer points at a port where nothing listens (the notifier under
test is fuzzed on its own), and the verification window and the gateway's leases are long (the
lease rows are written at the start, then renewed only every 20 minutes).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import prometheus_client
from google.protobuf import message_factory
from google.protobuf.descriptor import FileDescriptor, MethodDescriptor
from google.protobuf.message import Message
from idmesh.events.v1 import events_pb2
from idmesh.gateway.v1 import gateway_pb2
from idmesh.notifier.v1 import notifier_pb2
from idmesh.registry.v1 import registry_pb2

from services.common.channels import open_channel
from services.common.config import Env, ServerSettings
from services.common.db import Database
from services.common.identity import Caller, Kind, Role
from services.common.server import GrpcServer
from services.common.status import ErrorDetails, error_details
from services.common.storage import StoreSettings
from services.common.timeutil import SystemClock, to_timestamp, utcnow
from services.messenger_gateway.api.gateway import ERRORS as GATEWAY_ERRORS
from services.messenger_gateway.config import GatewayConfig
from services.messenger_gateway.main import open_gateway
from services.messenger_gateway.routing.router import NumberingPlan
from services.notifier.config import NotifierConfig
from services.notifier.grpc_api import ERRORS as NOTIFIER_ERRORS
from services.notifier.main import open_notifier
from services.operator_registry.grpc_api import ERRORS as REGISTRY_ERRORS
from services.operator_registry.main import add_servicers
from services.operator_registry.service import RegistryService
from services.operator_registry.store import MIGRATIONS as REGISTRY_MIGRATIONS
from services.operator_registry.store import SqliteRegistryStore
from tests.messenger_gateway.fakes import free_port, outbox_code

REPO = Path(__file__).resolve().parents[2]
OPERATOR = "beeline"
MESSENGER = "alpha"
NUMBER = "+79031234567"  # Beeline (903) in deploy/numbering-plan.csv, a subscriber of the seed
OTHER_NUMBER = "+79035550101"  # Beeline, a second subscriber
CALL_TIMEOUT = 30.0  # generous: a loaded 2-core machine must not turn a slow answer into a fail

REGISTRY = "registry"
NOTIFIER = "notifier"
GATEWAY = "gateway"

# The API files each server answers: every service of each, every method of each service.
SERVERS: dict[str, FileDescriptor] = {
    REGISTRY: registry_pb2.DESCRIPTOR,
    NOTIFIER: notifier_pb2.DESCRIPTOR,
    GATEWAY: gateway_pb2.DESCRIPTOR,
}
# The identity each service's authorization asks for (per method where a service serves several
# kinds of caller).
_RIGHT_IDENTITY: dict[str, Caller] = {
    "idmesh.registry.v1.RegistryService": Caller(Kind.MESSENGER, MESSENGER),
    "idmesh.registry.v1.RegistryAdminService": Caller(Kind.OPERATOR, OPERATOR, Role.ADMIN),
    "idmesh.notifier.v1.NotifierService": Caller(Kind.MESSENGER, MESSENGER),
    "idmesh.notifier.v1.NotifierService.Publish": Caller(Kind.OPERATOR, OPERATOR),
    "idmesh.gateway.v1.GatewayService": Caller(Kind.MESSENGER, MESSENGER, Role.FRONTEND),
    "idmesh.gateway.v1.GatewayAdminService": Caller(Kind.MESSENGER, MESSENGER, Role.ADMIN),
}
# Callers a request may come from instead (the fuzzer sends some requests with these).
OTHER_IDENTITIES: tuple[Caller, ...] = (
    Caller(Kind.MESSENGER, "beta"),
    Caller(Kind.MESSENGER, MESSENGER, Role.ADMIN),
    Caller(Kind.OPERATOR, "megafon"),
    Caller(Kind.NOTIFIER, "notifier"),
)


def methods() -> list[MethodDescriptor]:
    """Every RPC of the three services."""
    return [
        method
        for api in SERVERS.values()
        for service in api.services_by_name.values()
        for method in service.methods
    ]


def method_id(method: MethodDescriptor) -> str:
    return f"{method.containing_service.name}.{method.name}"


def right_identity(method: MethodDescriptor) -> Caller:
    for name in (method.full_name, method.containing_service.full_name):
        if name in _RIGHT_IDENTITY:
            return _RIGHT_IDENTITY[name]
    raise LookupError(
        f"{method.full_name}: name the identity it is for in _RIGHT_IDENTITY (tests/fuzz)"
    )


def server_of(method: MethodDescriptor) -> str:
    api = method.containing_service.file
    return next(server for server, file in SERVERS.items() if file.name == api.name)


@dataclass(frozen=True)
class Outcome:
    """What an RPC answered: its status code and details (and, when OK, the response).
    client_side: the status is the client's own (grpc's client library failed the call after the
    server had refused it), not the server's answer."""

    code: grpc.StatusCode
    details: str
    response: Message | None = None
    client_side: bool = False
    error: ErrorDetails | None = None  # a refusal's google.rpc details


class Mesh:
    """The running servers, callers to them, and readers of their stores. (Not a dataclass:
    hypothesis prints every argument of a failing example, and this one briefly.)"""

    def __init__(
        self, ports: dict[str, int], db_paths: dict[str, Path], hints: dict[str, list[str]]
    ) -> None:
        self.ports = ports
        self.db_paths = db_paths
        self.hints = hints  # field name -> values that exist in the stores
        self._channels: dict[tuple[str, Caller], grpc.aio.Channel] = {}
        self._stores: dict[str, StoreReader] = {}

    def __repr__(self) -> str:
        return f"Mesh(ports={self.ports})"

    def _channel(self, server: str, caller: Caller) -> grpc.aio.Channel:
        key = (server, caller)
        if key not in self._channels:
            self._channels[key] = open_channel(f"127.0.0.1:{self.ports[server]}", identity=caller)
        return self._channels[key]

    async def call(
        self, method: MethodDescriptor, requests: Sequence[Message], caller: Caller
    ) -> Outcome:
        """Call `method` as `caller`: one request (unary, server stream) or a stream of them.
        A server stream is read until its first message (the stream is then cancelled)."""
        channel = self._channel(server_of(method), caller)
        path = f"/{method.containing_service.full_name}/{method.name}"
        serialize = _serialize
        deserialize = message_factory.GetMessageClass(method.output_type).FromString
        try:
            if method.server_streaming:
                stream = channel.unary_stream(
                    path, request_serializer=serialize, response_deserializer=deserialize
                )(requests[0], timeout=CALL_TIMEOUT)
                try:
                    first = await stream.read()
                finally:
                    stream.cancel()
                response = None if first is grpc.aio.EOF else first
                return Outcome(grpc.StatusCode.OK, "", response)
            if method.client_streaming:
                return await self._stream(channel, path, deserialize, requests)
            else:
                reply = await channel.unary_unary(
                    path, request_serializer=serialize, response_deserializer=deserialize
                )(requests[0], timeout=CALL_TIMEOUT)
        except grpc.aio.AioRpcError as error:
            return Outcome(error.code(), error.details() or "", error=error_details(error))
        return Outcome(grpc.StatusCode.OK, "", reply)

    async def _stream(
        self,
        channel: grpc.aio.Channel,
        path: str,
        deserialize: Callable[[bytes], Message],
        requests: Sequence[Message],
    ) -> Outcome:
        """A client stream, written message by message. A server that refuses the stream at
        once (a wrong caller) may answer before the last write; grpc's client then sometimes
        fails the call itself, INTERNAL "Internal error from Core", instead of reporting the
        server's answer. Such an INTERNAL is told apart by the servers' own count of the
        INTERNAL and UNKNOWN answers they gave (services.common.metrics)."""
        failures_before = _server_failures(path)
        call = channel.stream_unary(
            path, request_serializer=_serialize, response_deserializer=deserialize
        )(timeout=CALL_TIMEOUT)
        try:
            with contextlib.suppress(asyncio.InvalidStateError, grpc.aio.AioRpcError):
                for request in requests:
                    await call.write(request)
                await call.done_writing()
            reply = await call
        except grpc.aio.AioRpcError as error:
            code = error.code()
            client_side = code in _FAILURES and _server_failures(path) == failures_before
            return Outcome(
                code, error.details() or "", client_side=client_side, error=error_details(error)
            )
        return Outcome(grpc.StatusCode.OK, "", reply)

    def snapshot(
        self, server: str, skip: frozenset[str] = frozenset()
    ) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of every table of the server's store but `skip` (committed state, read
        beside the service's own connection: the stores are in WAL mode)."""
        if server not in self._stores:
            self._stores[server] = StoreReader(self.db_paths[server])
        return self._stores[server].snapshot(skip)

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        for store in self._stores.values():
            store.close()


_FAILURES = (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)


def _server_failures(path: str) -> float:
    """How many INTERNAL or UNKNOWN answers the servers in this process gave to `path`."""
    return sum(
        prometheus_client.REGISTRY.get_sample_value(
            "idmesh_rpc_requests_total", {"method": path, "code": code.name}
        )
        or 0.0
        for code in _FAILURES
    )


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


class StoreReader:
    """A read-only connection to a store that dumps every table, again only when something
    was committed since its last dump (SQLite's data_version changes on every commit by
    another connection): most fuzzed requests are refused and write nothing."""

    def __init__(self, path: Path) -> None:
        self._connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        self._version: int | None = None
        self._skip: frozenset[str] = frozenset()
        self._tables: dict[str, list[tuple[Any, ...]]] = {}

    def snapshot(self, skip: frozenset[str]) -> dict[str, list[tuple[Any, ...]]]:
        (version,) = self._connection.execute("PRAGMA data_version").fetchone()
        if version != self._version or skip != self._skip:
            # A commit between the two reads makes the next call dump again: never stale.
            self._tables = self._dump(skip)
            self._version, self._skip = version, skip
        return self._tables

    def _dump(self, skip: frozenset[str]) -> dict[str, list[tuple[Any, ...]]]:
        tables = [
            name
            for (name,) in self._connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
            if name not in skip
        ]
        return {
            table: sorted(self._connection.execute(f'SELECT * FROM "{table}"'), key=repr)
            for table in sorted(tables)
        }

    def close(self) -> None:
        self._connection.close()


def changed_tables(
    before: Mapping[str, list[tuple[Any, ...]]], after: Mapping[str, list[tuple[Any, ...]]]
) -> list[str]:
    return sorted(name for name in set(before) | set(after) if before.get(name) != after.get(name))


# --- starting it ---------------------------------------------------------------------------------


async def _start_registry(path: Path, stack: contextlib.AsyncExitStack) -> tuple[int, Path]:
    db_path = path / "registry.db"
    db = await Database.open(db_path, REGISTRY_MIGRATIONS)
    stack.push_async_callback(db.close)
    service = RegistryService(SqliteRegistryStore(db), operator_id=OPERATOR, clock=SystemClock())
    server = GrpcServer(name="operator_registry", bind="127.0.0.1:0", errors=REGISTRY_ERRORS)
    add_servicers(server, service)
    port = await server.start()
    stack.push_async_callback(server.stop, None)
    return port, db_path


async def _start_notifier(path: Path, stack: contextlib.AsyncExitStack) -> tuple[int, Path]:
    db_path = path / "notifier.db"
    config = NotifierConfig.from_env(
        Env(
            {
                "IDMESH_DB_PATH": str(db_path),
                "IDMESH_BIND": "127.0.0.1:0",
                "IDMESH_INSECURE_DEV_MODE": "true",
                # An idle stream answers with a progress mark at once: a fuzzed Subscribe that
                # was accepted has a first message to read without a wait.
                "IDMESH_PROGRESS_INTERVAL_SECONDS": "0.01",
            }
        )
    )
    server = GrpcServer(name="notifier", bind=config.server.bind, errors=NOTIFIER_ERRORS)
    await stack.enter_async_context(open_notifier(config, server, SystemClock()))
    port = await server.start()
    stack.push_async_callback(server.stop, None)
    return port, db_path


async def _start_gateway(
    path: Path, registry_port: int, stack: contextlib.AsyncExitStack
) -> tuple[int, Path]:
    db_path = path / "gateway.db"
    config = GatewayConfig(
        server=ServerSettings(
            bind="127.0.0.1:0", log_level="info", log_format="json", shutdown_grace=0
        ),
        messenger_id=MESSENGER,
        db_path=db_path,
        store=StoreSettings(db_path=db_path),
        operators={OPERATOR: f"127.0.0.1:{registry_port}", "megafon": f"127.0.0.1:{free_port()}"},
        carriers={"Beeline": OPERATOR, "MegaFon": "megafon"},
        notifier_address=f"127.0.0.1:{free_port()}",  # see the module docstring
        sms_outbox=path / "sms-outbox.jsonl",
        numbering_plan=NumberingPlan.load(REPO / "deploy" / "numbering-plan.csv"),
        verify_retry_initial_seconds=0.05,
        verify_retry_max_seconds=0.2,
        notifier_retry_initial_seconds=1.0,
        notifier_retry_max_seconds=5.0,
        lease_seconds=3600.0,
    )
    server = GrpcServer(name="messenger_gateway", bind="127.0.0.1:0", errors=GATEWAY_ERRORS)
    await stack.enter_async_context(open_gateway(config, server))
    port = await server.start()
    await server.set_serving()
    stack.push_async_callback(server.stop, None)
    return port, db_path


async def _seed(mesh: Mesh, outbox: Path) -> None:
    """Data for the fuzzer to find: messengers, subscribers, an identified user and one
    awaiting a code, events and an ack at the notifier."""
    by_name = {method_id(m): m for m in methods()}

    async def ok(name: str, *requests: Message) -> Message | None:
        method = by_name[name]
        outcome = await mesh.call(method, requests, right_identity(method))
        assert outcome.code is grpc.StatusCode.OK, (name, outcome)
        return outcome.response

    for messenger_id in (MESSENGER, "beta"):
        await ok(
            "RegistryAdminService.RegisterMessenger",
            registry_pb2.RegisterMessengerRequest(messenger_id=messenger_id),
        )
    for index, number in enumerate((NUMBER, OTHER_NUMBER)):
        await ok(
            "RegistryAdminService.CreateSubscriber",
            registry_pb2.CreateSubscriberRequest(phone_number=number, contract_id=f"BEE-{index}"),
        )
    started = await ok(
        "GatewayService.StartIdentification",
        gateway_pb2.StartIdentificationRequest(user_id="u-identified", phone_number=NUMBER),
    )
    assert isinstance(started, gateway_pb2.StartIdentificationResponse)
    identified_id = started.identification.identification_id
    confirmed = await ok(
        "GatewayService.ConfirmPossession",
        gateway_pb2.ConfirmPossessionRequest(
            identification_id=identified_id, code=outbox_code(outbox, identified_id)
        ),
    )
    assert isinstance(confirmed, gateway_pb2.ConfirmPossessionResponse)
    assert confirmed.identification.state == gateway_pb2.IDENTIFICATION_STATE_IDENTIFIED
    awaiting = await ok(
        "GatewayService.StartIdentification",
        gateway_pb2.StartIdentificationRequest(user_id="u-awaiting", phone_number=OTHER_NUMBER),
    )
    assert isinstance(awaiting, gateway_pb2.StartIdentificationResponse)
    events = [
        events_pb2.ContractTerminated(
            event_id=f"seed-{n}",
            operator_id=OPERATOR,
            messenger_id=MESSENGER,
            phone_number=NUMBER,
            identification_code=f"seed-code-{n}",
            reason=events_pb2.TERMINATION_REASON_CONTRACT_ENDED,
            occurred_at=to_timestamp(utcnow()),
        )
        for n in range(3)
    ]
    await ok("NotifierService.Publish", notifier_pb2.PublishRequest(events=events))
    await ok("NotifierService.Ack", notifier_pb2.AckRequest(messenger_id=MESSENGER, up_to_seq=1))
    mesh.hints.update(
        identification_id=[identified_id, awaiting.identification.identification_id],
        event_id=["seed-0", "seed-2"],
        identification_code=["seed-code-1"],
    )


HINTS: dict[str, list[str]] = {
    # Values the stores hold (more come from the seed): a fuzzer that only sent random strings
    # would be refused at the first check of every RPC and never reach the deeper ones.
    "phone_number": [NUMBER, OTHER_NUMBER, "89031234567", "+7 903 123-45-67", "+79261234567"],
    "messenger_id": [MESSENGER, "beta", "gamma"],
    "operator_id": [OPERATOR, "megafon"],
    "recipient_operator_id": ["megafon", "mts", OPERATOR],
    "user_id": ["u-identified", "u-awaiting", "u-new"],
    "contract_id": ["BEE-0", "BEE-9"],
    "code": ["000000", "123456"],
    "request_id": ["req-1", "req-2"],
    "page_token": ["1", "0", "-1", "99999999999999999999"],
    "outcome": ["IDENTIFIED", "NO_SUBSCRIBER"],
    "display_name": ["Alpha"],
}


@contextlib.asynccontextmanager
async def running_mesh(path: Path) -> AsyncIterator[Mesh]:
    async with contextlib.AsyncExitStack() as stack:
        registry_port, registry_db = await _start_registry(path, stack)
        notifier_port, notifier_db = await _start_notifier(path, stack)
        gateway_port, gateway_db = await _start_gateway(path, registry_port, stack)
        mesh = Mesh(
            ports={REGISTRY: registry_port, NOTIFIER: notifier_port, GATEWAY: gateway_port},
            db_paths={REGISTRY: registry_db, NOTIFIER: notifier_db, GATEWAY: gateway_db},
            hints={name: list(values) for name, values in HINTS.items()},
        )
        stack.push_async_callback(mesh.close)
        await _seed(mesh, path / "sms-outbox.jsonl")
        yield mesh
