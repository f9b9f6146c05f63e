"""4. Bulk import: ImportSubscribers of `import_rows` rows in batches of `import_batch`
(serialised before the clock starts), against the plainest fast load of the same rows into the
same schema on the same engine: sqlite3 executemany, or asyncpg COPY on PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from idmesh.registry.v1 import registry_pb2, registry_pb2_grpc

from bench import procs, seed, topology
from bench.scenarios.context import BenchFailure, Context, progress, ratio
from bench.scenarios.spec import Scenario, Target
from bench.topology import PostgresServer
from services.common.identity import Caller, Kind, Role
from services.common.pg import migrate
from services.common.timeutil import from_iso
from services.operator_registry.store import MIGRATIONS as REGISTRY_MIGRATIONS

IMPORT_METHOD = "/idmesh.registry.v1.RegistryAdminService/ImportSubscribers"


def _import_batches(rows: int, batch: int) -> Iterator[bytes]:
    activated = Timestamp(seconds=1_700_000_000)
    for first in range(0, rows, batch):
        request = registry_pb2.ImportSubscribersRequest(
            mode=registry_pb2.IMPORT_MODE_VALID_ROWS,
            rows=[
                registry_pb2.SubscriberRow(
                    line=i + 1,
                    phone_number=seed.import_number(i),
                    contract_id=f"imp-{i:08d}",
                    activated_at=activated,
                )
                for i in range(first, min(rows, first + batch))
            ],
        )
        yield request.SerializeToString()


def import_implemented() -> bool:
    """Whether the registry's admin servicer implements ImportSubscribers (the generated base
    class's method only answers UNIMPLEMENTED)."""
    from services.operator_registry.grpc_api import RegistryAdminServicer

    base = registry_pb2_grpc.RegistryAdminServiceServicer.ImportSubscribers
    return getattr(RegistryAdminServicer, "ImportSubscribers", base) is not base


def _baseline_batches(
    rows: int, chunk: int, activated: object
) -> Iterator[list[tuple[object, ...]]]:
    """The import's rows as contracts rows (contract_id, phone_number, state, activated_at),
    `chunk` at a time (each built before the baseline's clock runs on it)."""
    for first in range(0, rows, chunk):
        yield [
            (f"imp-{i:08d}", seed.import_number(i), "active", activated)
            for i in range(first, min(rows, first + chunk))
        ]


def _sqlite_baseline(path: Path, rows: int, chunk: int = 100_000) -> float:
    """Seconds for plain sqlite3 executemany of the same rows into the registry's schema, one
    transaction, the registry's pragmas (WAL, synchronous=NORMAL); building the row tuples is
    not timed."""
    conn = seed.open_store(path, REGISTRY_MIGRATIONS)
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA cache_size=-2000")  # SQLite's default, as the registry has
    activated = "2023-11-14T22:13:20.000000+00:00"
    elapsed = 0.0
    try:
        started = time.perf_counter()
        conn.execute("BEGIN")
        elapsed += time.perf_counter() - started
        for batch in _baseline_batches(rows, chunk, activated):
            started = time.perf_counter()
            conn.executemany(
                "INSERT INTO contracts (contract_id, phone_number, state, activated_at) "
                "VALUES (?, ?, ?, ?)",
                batch,
            )
            elapsed += time.perf_counter() - started
        started = time.perf_counter()
        conn.execute("COMMIT")
        elapsed += time.perf_counter() - started
    finally:
        conn.close()
    return elapsed


async def _postgres_baseline(server: PostgresServer, rows: int, chunk: int = 100_000) -> float:
    """Seconds for asyncpg COPY (copy_records_to_table) of the same rows into the registry's
    PostgreSQL schema, in a database of its own on the same server, one transaction; building
    the row tuples is not timed."""
    from services.localmesh.postgres import create_databases
    from services.operator_registry.store_pg import PG_MIGRATIONS, SERVICE

    deployment = "import-baseline"
    await create_databases(server.url, [server.database(deployment)])
    conn = await asyncpg.connect(server.database_url(deployment))
    activated = from_iso("2023-11-14T22:13:20.000000+00:00")
    elapsed = 0.0
    try:
        await migrate(conn, SERVICE, PG_MIGRATIONS)
        started = time.perf_counter()
        transaction = conn.transaction()
        await transaction.start()
        elapsed += time.perf_counter() - started
        for batch in _baseline_batches(rows, chunk, activated):
            started = time.perf_counter()
            await conn.copy_records_to_table(
                "contracts",
                records=batch,
                columns=("contract_id", "phone_number", "state", "activated_at"),
            )
            elapsed += time.perf_counter() - started
        started = time.perf_counter()
        await transaction.commit()
        elapsed += time.perf_counter() - started
    finally:
        await conn.close()
    return elapsed


async def run(ctx: Context) -> dict[str, Any]:
    cfg = ctx.config
    name = f"registry-{topology.IMPORT_OPERATOR}"
    channel = ctx.channel(
        ctx.mesh.address(name), Caller(Kind.OPERATOR, topology.IMPORT_OPERATOR, Role.ADMIN)
    )
    call = channel.stream_unary(
        IMPORT_METHOD,
        request_serializer=None,  # the batches are serialised before the clock starts
        response_deserializer=registry_pb2.ImportSubscribersResponse.FromString,
    )
    pending = {
        "status": "pending",
        "reason": "ImportSubscribers is not implemented in the registry yet (issue 7)",
        "rows": cfg.import_rows,
    }
    if not import_implemented():
        progress("bulk import: ImportSubscribers is not implemented yet: pending")
        return pending
    empty = registry_pb2.ImportSubscribersRequest(mode=registry_pb2.IMPORT_MODE_VALID_ROWS)
    try:
        await call(iter([empty.SerializeToString()]), timeout=30)
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
            progress("bulk import: ImportSubscribers answers UNIMPLEMENTED: pending")
            return pending
        # Anything else: the real import below reports it.
    batches = await asyncio.to_thread(
        lambda: list(_import_batches(cfg.import_rows, cfg.import_batch))
    )
    names = (name, procs.POSTGRES) if ctx.postgres is not None else (name,)
    pids = {n: p for n, p in ctx.mesh_pids().items() if n in names}
    mark = procs.cpu_mark(pids)
    with ctx.profiling("import", names):
        started = time.perf_counter()
        reply = await call(iter(batches), timeout=3600)
        elapsed = time.perf_counter() - started
    cpu = procs.cpu_since(mark, pids)
    del batches
    if reply.imported != cfg.import_rows:
        raise BenchFailure(
            f"ImportSubscribers imported {reply.imported} of {cfg.import_rows} rows "
            f"(rejected {reply.rejected}, first errors {list(reply.errors)[:3]})"
        )
    if ctx.postgres is not None:
        baseline_name = "asyncpg COPY"
        baseline_seconds = await _postgres_baseline(ctx.postgres, cfg.import_rows)
    else:
        baseline_name = "sqlite3 executemany"
        baseline_seconds = await asyncio.to_thread(
            _sqlite_baseline, ctx.work_dir / "import-baseline" / "registry.db", cfg.import_rows
        )
    rows_per_second = cfg.import_rows / elapsed
    baseline = cfg.import_rows / baseline_seconds
    progress(f"bulk import: {rows_per_second:.0f} rows/s; {baseline_name} {baseline:.0f} rows/s")
    return {
        "status": "ok",
        "rows": cfg.import_rows,
        "batch": cfg.import_batch,
        "seconds": round(elapsed, 3),
        "rows_per_second": round(rows_per_second, 1),
        "baseline_name": baseline_name,
        "baseline_seconds": round(baseline_seconds, 3),
        "baseline_rows_per_second": round(baseline, 1),
        "ratio": ratio(rows_per_second, baseline),
        "cpu_seconds": cpu,
    }


SCENARIO = Scenario(
    name="import",
    title="bulk import",
    run=run,
    targets=(
        Target(
            name="bulk import {rows:,} rows",
            figure="rows_per_second",
            unit="rows/s",
            baseline="baseline_rows_per_second",
            baseline_name="{baseline_name|sqlite3 executemany}",
            ratio="ratio",
            op=">=",
            threshold=0.8,
            doc="rows per second through ImportSubscribers: at least 0.8 of the plainest fast "
            "load of the same rows into the same schema on the same engine (sqlite3 "
            "executemany, asyncpg COPY)",
        ),
    ),
)
