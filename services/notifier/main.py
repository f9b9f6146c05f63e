"""Bootstrap: config -> logging -> store -> service -> GrpcServer -> serve (common.runner)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from idmesh.notifier.v1 import notifier_pb2, notifier_pb2_grpc

from services.common.db import Database
from services.common.jobs import run_every
from services.common.metrics import registered
from services.common.runner import run_main, serve
from services.common.server import GrpcServer, service_name
from services.common.storage import StoreSettings, open_database
from services.common.timeutil import Clock, SystemClock
from services.notifier.config import NotifierConfig
from services.notifier.grpc_api import ERRORS, NotifierServicer
from services.notifier.ports import NotifierStore
from services.notifier.service import NotifierService, delivery_metrics
from services.notifier.store import MIGRATIONS, SqliteNotifierStore
from services.notifier.store_pg import PG_MIGRATIONS, SERVICE, PgNotifierStore

NAME = "notifier"


@asynccontextmanager
async def wiring(config: NotifierConfig, server: GrpcServer) -> AsyncIterator[None]:
    """The runner's wiring: the notifier with the system clock."""
    async with open_notifier(config, server, SystemClock()):
        yield


@asynccontextmanager
async def open_notifier(
    config: NotifierConfig, server: GrpcServer, clock: Clock
) -> AsyncIterator[NotifierService]:
    """Open the store, add the servicer, run the SLA and pruning jobs; undo all of it on exit."""
    async with open_store(config.store) as store:
        service = NotifierService(
            store,
            clock,
            delivery=config.delivery,
            streams=config.streams,
        )
        server.add(
            notifier_pb2_grpc.add_NotifierServiceServicer_to_server,
            NotifierServicer(service),
            service_name(notifier_pb2.DESCRIPTOR, "NotifierService"),
        )
        server.on_shutdown(service.close)  # streams end at once (UNAVAILABLE: resume later)
        jobs = [
            asyncio.create_task(
                run_every(config.sla_check_seconds, service.check_sla, "sla_check"),
                name="notifier-sla-check",
            ),
            asyncio.create_task(
                run_every(config.prune_interval_seconds, service.prune, "prune"),
                name="notifier-prune",
            ),
        ]
        try:
            # Streams wake when another replica commits events for their messenger.
            async with store.publications(service.wake):
                with registered(delivery_metrics(service)):
                    yield service
        finally:
            for job in jobs:
                job.cancel()
            await asyncio.wait(jobs)
            await service.close()  # ends the streams still open (UNAVAILABLE: resume later)


@asynccontextmanager
async def open_store(settings: StoreSettings) -> AsyncIterator[NotifierStore]:
    """The notifier's store on the configured engine, migrated; closed on exit."""
    async with open_database(settings, SERVICE, sqlite=MIGRATIONS, postgresql=PG_MIGRATIONS) as db:
        yield SqliteNotifierStore(db) if isinstance(db, Database) else PgNotifierStore(db)


async def run(config: NotifierConfig) -> None:
    await serve(NAME, config, wiring, ERRORS)


def main() -> None:
    run_main(NAME, NotifierConfig.from_env, wiring, ERRORS)
