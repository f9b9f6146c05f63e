"""The mesh's state once quiesced: the stores (read directly, SELECTs only, while the services
run: WAL readers do not block them; on PostgreSQL through the services' own URLs) and the public
APIs (CheckAccess, GetDeliveryStatus)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import grpc
from idmesh.gateway.v1 import gateway_pb2
from idmesh.notifier.v1 import notifier_pb2

from services.localmesh import Mesh
from tools.chaos.client import Client
from tools.chaos.schedule import MESSENGERS, OPERATORS

Row = dict[str, Any]
T = TypeVar("T")


@dataclass
class Snapshot:
    taken_at: datetime
    contracts: dict[tuple[str, str], Row] = field(default_factory=dict)  # (operator, contract)
    bindings: list[Row] = field(default_factory=list)  # + operator
    outbox: list[Row] = field(default_factory=list)  # + operator
    sequences: dict[str, Row] = field(default_factory=dict)  # messenger -> head_seq, acked_seq
    events: list[Row] = field(default_factory=list)
    identifications: dict[str, list[Row]] = field(default_factory=dict)  # messenger -> by seq
    inbox: dict[str, list[Row]] = field(default_factory=dict)
    cursors: dict[str, int] = field(default_factory=dict)
    access: dict[tuple[str, str], bool] = field(default_factory=dict)  # (messenger, user)
    delivery: dict[str, tuple[int, int]] = field(default_factory=dict)  # head, acked (API)

    def current(self, messenger: str) -> dict[str, Row]:
        """user -> the user's current (latest) identification."""
        latest: dict[str, Row] = {}
        for row in self.identifications.get(messenger, []):
            latest[row["user_id"]] = row  # ordered by seq: the last one wins
        return latest


Select = Callable[[str, str], Awaitable[list[Row]]]  # (service, sql) -> rows


def _select_sqlite(path: Path, sql: str) -> list[Row]:
    with closing(sqlite3.connect(path, timeout=30)) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(row) for row in conn.execute(sql)]


def read_stores(mesh: Mesh) -> Snapshot:
    """The stores of every service (blocking: run it in a thread)."""
    return asyncio.run(_read_stores(mesh))


async def _read_stores(mesh: Mesh) -> Snapshot:
    connections: dict[str, asyncpg.Connection] = {}

    async def select(service: str, sql: str) -> list[Row]:
        env = mesh.services[service].env
        url = env.get("IDMESH_DATABASE_URL")
        if url is None:
            return _select_sqlite(Path(env["IDMESH_DB_PATH"]), sql)
        if service not in connections:
            connections[service] = await asyncpg.connect(url, timeout=30)
        return [dict(row) for row in await connections[service].fetch(sql)]

    try:
        return await _read(select)
    finally:
        for conn in connections.values():
            await conn.close()


async def _read(select: Select) -> Snapshot:
    snap = Snapshot(taken_at=datetime.now(UTC))
    for op in OPERATORS:
        registry = f"registry-{op}"
        for row in await select(registry, "SELECT * FROM contracts"):
            snap.contracts[(op, row["contract_id"])] = row
        bindings = await select(registry, "SELECT * FROM bindings")
        snap.bindings += [{**r, "operator": op} for r in bindings]
        outbox = await select(registry, "SELECT * FROM outbox")
        snap.outbox += [{**r, "operator": op} for r in outbox]
    sequences = await select("notifier", "SELECT * FROM sequences")
    snap.sequences = {r["messenger_id"]: r for r in sequences}
    snap.events = await select("notifier", "SELECT * FROM events ORDER BY messenger_id, seq")
    for m in MESSENGERS:
        gateway = f"gateway-{m}"
        snap.identifications[m] = await select(
            gateway, "SELECT * FROM identifications ORDER BY seq"
        )
        snap.inbox[m] = await select(gateway, "SELECT * FROM notice_inbox ORDER BY seq")
        cursors = await select(gateway, "SELECT * FROM notice_cursor")
        snap.cursors[m] = max((int(r["seq"]) for r in cursors), default=0)
    return snap


def outstanding(snap: Snapshot) -> list[str]:
    """What the mesh still has to do before it is quiet: notices not yet published, delivered
    or applied, verifications still pending."""
    left = []
    unpublished = sum(1 for r in snap.outbox if r["published_at"] is None)
    if unpublished:
        left.append(f"{unpublished} outbox notices unpublished")
    for m in MESSENGERS:
        seq = snap.sequences.get(m, {"head_seq": 0, "acked_seq": 0})
        if seq["acked_seq"] < seq["head_seq"]:
            left.append(f"{m}: acked {seq['acked_seq']} < head {seq['head_seq']}")
        if snap.cursors[m] < seq["head_seq"]:
            left.append(f"{m}: cursor {snap.cursors[m]} < head {seq['head_seq']}")
        verifying = sum(1 for r in snap.identifications[m] if r["state"] == "VERIFYING")
        if verifying:
            left.append(f"{m}: {verifying} VERIFYING")
    return left


async def read_apis(client: Client, snap: Snapshot, users: set[tuple[str, str]]) -> None:
    """CheckAccess of every user the history knows, and each messenger's delivery status: a few
    calls at a time (the services shed load beyond their concurrency limit), each retried while
    shed or unavailable."""

    async def status(messenger: str) -> None:
        request = notifier_pb2.GetDeliveryStatusRequest(messenger_id=messenger)
        stub = client.notifier(messenger)
        reply = await _patiently(lambda: stub.GetDeliveryStatus(request, timeout=10))
        snap.delivery[messenger] = (reply.head_seq, reply.acked_seq)

    async def check(messenger: str, user: str) -> None:
        request = gateway_pb2.CheckAccessRequest(user_id=user)
        reply = await _patiently(lambda: client.gateway(messenger).CheckAccess(request, timeout=10))
        snap.access[(messenger, user)] = reply.allowed

    for m in MESSENGERS:
        await status(m)
    pending = sorted(users)
    for i in range(0, len(pending), READ_CONCURRENCY):
        await asyncio.gather(*(check(m, u) for m, u in pending[i : i + READ_CONCURRENCY]))


READ_CONCURRENCY = 8
_TRANSIENT = {grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE}


async def _patiently(call: Callable[[], Awaitable[T]], attempts: int = 50) -> T:
    """call() until it is not refused for load or unavailability (the mesh is quiet: this is
    the readers' own burst), at most `attempts` times."""
    for attempt in range(attempts):
        try:
            return await call()
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in _TRANSIENT or attempt + 1 == attempts:
                raise
            await asyncio.sleep(0.1)
    raise AssertionError("unreachable")
