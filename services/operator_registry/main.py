"""Bootstrap: config -> logging -> store -> service -> GrpcServer (+ outbox relay) -> serve."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from idmesh.registry.v1 import registry_pb2, registry_pb2_grpc

from services.common.backoff import Backoff
from services.common.db import Database
from services.common.jobs import run_every
from services.common.logging import get_logger
from services.common.runner import run_main, serve
from services.common.server import GrpcServer, service_name
from services.common.storage import StoreSettings, open_database
from services.common.timeutil import SystemClock
from services.operator_registry.config import RegistryConfig
from services.operator_registry.grpc_api import ERRORS, RegistryAdminServicer, RegistryServicer
from services.operator_registry.ports import RegistryStore
from services.operator_registry.relay import OutboxRelay
from services.operator_registry.seed import SeedError, apply_seed, load_seed
from services.operator_registry.service import RegistryService
from services.operator_registry.store import MIGRATIONS, SqliteRegistryStore
from services.operator_registry.store_pg import PG_MIGRATIONS, SERVICE, PgRegistryStore

NAME = "operator_registry"
log = get_logger("idmesh.operator_registry.main")
PRUNE_SECONDS = 3600.0  # the retention jobs (audit records, verification answers)


@asynccontextmanager
async def wiring(config: RegistryConfig, server: GrpcServer) -> AsyncIterator[None]:
    """Open the store, apply the seed, add the servicers and start the relay; undo on exit."""
    clock = SystemClock()
    try:
        seed = load_seed(config.seed_file) if config.seed_file else None
    except SeedError as exc:
        log.error("seed.invalid", error=str(exc))
        raise SystemExit(2) from None
    async with open_store(config.store) as store:
        service = RegistryService(
            store,
            operator_id=config.operator_id,
            clock=clock,
            records_begin_at=config.records_begin_at,
            verify_limit=config.verify_limit,
        )
        if seed is not None:
            try:
                outcome = await apply_seed(service, seed, clock.now())
            except SeedError as exc:
                log.error("seed.invalid", error=str(exc))
                raise SystemExit(2) from None
            log.info(
                "seed.applied",
                file=str(seed.path),
                messengers_added=outcome.messengers_added,
                subscribers_added=outcome.subscribers_added,
                subscribers_skipped=outcome.subscribers_skipped,
            )
        add_servicers(server, service)
        relay = OutboxRelay(
            service,
            notifier_address=config.notifier_address,
            tls=config.server.tls,
            batch_size=config.relay_batch_size,
            poll_seconds=config.relay_poll_seconds,
            backoff=Backoff(initial=0.5, maximum=config.relay_retry_max_seconds),
        )
        tasks = [
            asyncio.create_task(relay.run(), name="outbox-relay"),
            asyncio.create_task(
                run_every(
                    PRUNE_SECONDS,
                    lambda: service.prune_audit(config.audit_retention),
                    "audit_retention",
                ),
                name="audit-retention",
            ),
            asyncio.create_task(
                run_every(
                    PRUNE_SECONDS,
                    lambda: service.prune_verifications(config.verification_retention),
                    "verification_retention",
                ),
                name="verification-retention",
            ),
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task


@asynccontextmanager
async def open_store(settings: StoreSettings) -> AsyncIterator[RegistryStore]:
    """The registry's store on the configured engine, migrated; closed on exit."""
    async with open_database(settings, SERVICE, sqlite=MIGRATIONS, postgresql=PG_MIGRATIONS) as db:
        yield SqliteRegistryStore(db) if isinstance(db, Database) else PgRegistryStore(db)


def add_servicers(server: GrpcServer, service: RegistryService) -> None:
    """The registry's two APIs (for messengers, for the operator's own systems) on server."""
    server.add(
        registry_pb2_grpc.add_RegistryServiceServicer_to_server,
        RegistryServicer(service),
        service_name(registry_pb2.DESCRIPTOR, "RegistryService"),
    )
    server.add(
        registry_pb2_grpc.add_RegistryAdminServiceServicer_to_server,
        RegistryAdminServicer(service),
        service_name(registry_pb2.DESCRIPTOR, "RegistryAdminService"),
    )


async def run(config: RegistryConfig) -> None:
    await serve(NAME, config, wiring, ERRORS)


def main() -> None:
    run_main(NAME, RegistryConfig.from_env, wiring, ERRORS)
