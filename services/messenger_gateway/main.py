"""Bootstrap: config -> logging -> store -> routing, SMS, registries -> service -> server.

`python -m services.messenger_gateway` (see config.py for the environment variables).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta

from idmesh.gateway.v1 import gateway_pb2, gateway_pb2_grpc, peer_pb2, peer_pb2_grpc

from services.common.backoff import Backoff
from services.common.channels import open_channel
from services.common.db import Database
from services.common.identity import Caller, Kind
from services.common.jobs import run_every
from services.common.keyfile import load_or_create_key
from services.common.lease import LeaseKeeper, default_replica_id
from services.common.logging import get_logger
from services.common.metrics import ScrapeCollector, registered
from services.common.runner import run_main, serve
from services.common.server import GrpcServer, service_name
from services.common.storage import Engine, StoreSettings, open_database
from services.common.timeutil import Clock, SystemClock
from services.messenger_gateway.adapters.peer_client import PeerClients
from services.messenger_gateway.adapters.policy_store import SqlitePolicyStore
from services.messenger_gateway.adapters.policy_store_pg import PgPolicyStore
from services.messenger_gateway.adapters.registry_client import RegistryClients
from services.messenger_gateway.adapters.schema import MIGRATIONS
from services.messenger_gateway.adapters.schema_pg import PG_MIGRATIONS, SERVICE
from services.messenger_gateway.adapters.sms import FileSmsSender
from services.messenger_gateway.adapters.store import SqliteGatewayStore
from services.messenger_gateway.adapters.store_pg import PgGatewayStore
from services.messenger_gateway.api.gateway import ERRORS, GatewayAdminServicer, GatewayServicer
from services.messenger_gateway.api.peer import GatewayPeerServicer
from services.messenger_gateway.config import GatewayConfig
from services.messenger_gateway.identification.codes import CodeHasher
from services.messenger_gateway.identification.ports import GatewayStore
from services.messenger_gateway.identification.settings import GatewaySettings
from services.messenger_gateway.notices.consumer import NoticeConsumer
from services.messenger_gateway.policy.forwarding import ShardedDecisions
from services.messenger_gateway.policy.model import UnacceptedPolicy
from services.messenger_gateway.policy.ownership import ShardOwnership
from services.messenger_gateway.policy.ports import PolicyStore
from services.messenger_gateway.policy.service import PolicyService, PolicySettings
from services.messenger_gateway.routing.router import PortedNumbersTable, build_router
from services.messenger_gateway.service import GatewayService

NAME = "messenger_gateway"
log = get_logger("idmesh.gateway.main")


@dataclass
class Gateway:
    """The running parts, for tests and for the wiring below."""

    config: GatewayConfig
    store: GatewayStore
    service: GatewayService
    consumer: NoticeConsumer
    consumer_lease: LeaseKeeper  # runs the consumer while this replica holds the lease
    consumer_task: asyncio.Task[None]
    policy: PolicyService
    ownership: ShardOwnership | None = None  # with IDMESH_POLICY_SHARDS: the shards held here


@dataclass(frozen=True)
class GatewayStores:
    """The gateway's two stores over one database: identifications and the delivery policy."""

    gateway: GatewayStore
    policy: PolicyStore


@asynccontextmanager
async def open_stores(settings: StoreSettings) -> AsyncIterator[GatewayStores]:
    """The gateway's stores on the configured engine, migrated; closed on exit."""
    async with open_database(settings, SERVICE, sqlite=MIGRATIONS, postgresql=PG_MIGRATIONS) as db:
        if isinstance(db, Database):
            yield GatewayStores(SqliteGatewayStore(db), SqlitePolicyStore(db))
        else:
            yield GatewayStores(PgGatewayStore(db), PgPolicyStore(db))


@asynccontextmanager
async def open_store(settings: StoreSettings) -> AsyncIterator[GatewayStore]:
    """The gateway's identification store on the configured engine, migrated; closed on exit."""
    async with open_stores(settings) as stores:
        yield stores.gateway


@asynccontextmanager
async def open_gateway(
    config: GatewayConfig, server: GrpcServer, *, clock: Clock | None = None
) -> AsyncIterator[Gateway]:
    """Open the store, build the service, add the servicer to server, resume pending
    verifications and start the notice consumer (while this replica holds its lease); undo it
    all on exit."""
    identity = Caller(Kind.MESSENGER, config.messenger_id)
    replica_id = config.replica_id or default_replica_id(
        single=config.store.engine is Engine.SQLITE
    )
    async with AsyncExitStack() as stack:
        stores = await stack.enter_async_context(open_stores(config.store))
        store = stores.gateway
        policy = PolicyService(
            PolicySettings(
                unaccepted_default=(
                    UnacceptedPolicy.REFUSE
                    if config.policy_refuse_unaccepted
                    else UnacceptedPolicy.ALLOW
                ),
                poll_interval=config.policy_poll_seconds,
                change_retention=timedelta(seconds=config.policy_change_retention_seconds),
                shards=config.policy_shards,
            ),
            store=stores.policy,
            clock=clock,
        )
        await policy.start()
        # The policy index's dictionaries hold millions of entries for the process's lifetime:
        # keep the collector's full passes from walking them again and again.
        gc.collect()
        gc.freeze()
        router = build_router(
            config.numbering_plan,
            carriers=config.carriers,
            operators=config.operators,
            ported=PortedNumbersTable(store),
        )
        registries = RegistryClients(config.operators, identity=identity, tls=config.server.tls)
        stack.push_async_callback(registries.close)
        service = GatewayService(
            GatewaySettings(
                messenger_id=config.messenger_id,
                verification_window=timedelta(seconds=config.verification_window_seconds),
                otp_ttl=timedelta(seconds=config.otp_ttl_seconds),
                otp_max_attempts=config.otp_max_attempts,
                verify_retry=Backoff(
                    initial=config.verify_retry_initial_seconds,
                    maximum=config.verify_retry_max_seconds,
                ),
                otp_phone_limit=config.otp_phone_limit,
                otp_user_limit=config.otp_user_limit,
                allowed_countries=config.allowed_countries,
                replica_id=replica_id,
                lease_ttl=timedelta(seconds=config.lease_seconds),
            ),
            store=store,
            router=router,
            sms=FileSmsSender(config.sms_outbox, clock=clock),
            operators=registries,
            clock=clock or SystemClock(),
            code_hasher=CodeHasher(
                load_or_create_key(config.otp_key_file or config.db_path.parent / "otp-hmac.key")
            ),
            policy=policy,
        )
        stack.push_async_callback(service.close)
        ownership, sharded = None, None
        if policy.sharded is not None:
            ownership = ShardOwnership(
                store,
                policy,
                messenger_id=config.messenger_id,
                replica_id=replica_id,
                address=config.advertise_address,
                count=policy.sharded.count,
                ttl=config.lease_seconds,
                clock=clock,
            )
            peers = PeerClients(identity=identity, tls=config.server.tls)
            stack.push_async_callback(peers.close)
            sharded = ShardedDecisions(policy, ownership, peers)
            server.add(
                peer_pb2_grpc.add_GatewayPeerServiceServicer_to_server,
                GatewayPeerServicer(config.messenger_id, policy),
                service_name(peer_pb2.DESCRIPTOR, "GatewayPeerService"),
            )
        server.add(
            gateway_pb2_grpc.add_GatewayServiceServicer_to_server,
            GatewayServicer(service, policy, sharded),
            service_name(gateway_pb2.DESCRIPTOR, "GatewayService"),
        )
        server.add(
            gateway_pb2_grpc.add_GatewayAdminServiceServicer_to_server,
            GatewayAdminServicer(service, policy),
            service_name(gateway_pb2.DESCRIPTOR, "GatewayAdminService"),
        )
        log.info(
            "gateway.configured",
            messenger_id=config.messenger_id,
            operators=sorted(config.operators),
            carriers=dict(config.carriers),
            routing_sources=router.sources,
            numbering_plan=str(config.numbering_plan_path) if config.numbering_plan_path else None,
            numbering_plan_ranges=len(config.numbering_plan) if config.numbering_plan else 0,
            sms_outbox=str(config.sms_outbox),
            verification_window_seconds=config.verification_window_seconds,
            replica_id=replica_id,
            lease_seconds=config.lease_seconds,
            policy_shards=config.policy_shards,
            advertise_address=config.advertise_address or None,
        )
        await service.resume_pending()
        for name, job in (
            ("policy-tail", policy.run_tail()),
            (
                "policy-change-pruning",
                run_every(3600.0, policy.prune_changes, "policy-change-pruning"),
            ),
        ):
            task = asyncio.create_task(job, name=name)
            stack.push_async_callback(_cancel, task)
        if ownership is not None:
            # cancelled before the tail: the shards are given up while the index still follows
            shards_task = asyncio.create_task(ownership.run(), name="policy-shard-ownership")
            stack.push_async_callback(_cancel, shards_task)
        stack.enter_context(registered(ScrapeCollector("gateway_policy", policy.policy_metrics)))
        watchdog = asyncio.create_task(
            service.run_watchdog(
                watchdog_interval(config.verification_window_seconds, config.lease_seconds)
            ),
            name="verification-watchdog",
        )
        stack.push_async_callback(_cancel, watchdog)
        notifier = open_channel(config.notifier_address, identity=identity, tls=config.server.tls)
        stack.push_async_callback(notifier.close)
        consumer = NoticeConsumer(
            service,
            notifier,
            backoff=Backoff(
                initial=config.notifier_retry_initial_seconds,
                maximum=config.notifier_retry_max_seconds,
            ),
        )
        # One replica of the messenger consumes the stream; the others stand by. The consumer
        # runs with the lease's fence: a batch is applied only while its token is the lease's.
        consumer_lease = LeaseKeeper(
            store,
            notice_consumer_lease(config.messenger_id),
            holder=replica_id,
            work=consumer.run,
            ttl=config.lease_seconds,
            clock=clock,
        )
        consumer_task = asyncio.create_task(consumer_lease.run(), name="notice-consumer")
        stack.push_async_callback(_cancel, consumer_task)
        yield Gateway(
            config, store, service, consumer, consumer_lease, consumer_task, policy, ownership
        )


def notice_consumer_lease(messenger_id: str) -> str:
    """The name of the lease whose holder consumes the messenger's notices."""
    return f"notices:{messenger_id}"


def watchdog_interval(window_seconds: float, lease_seconds: float = 6.0) -> float:
    """How often the sweep for overdue verifications runs (each task is its own timer too), and
    the leases of this replica's verifications are renewed (every third of their term) and free
    ones claimed."""
    return min(30.0, max(0.5, window_seconds / 4), lease_seconds / 3)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@asynccontextmanager
async def wiring(config: GatewayConfig, server: GrpcServer) -> AsyncIterator[None]:
    async with open_gateway(config, server):
        yield


async def run(config: GatewayConfig) -> None:
    await serve(NAME, config, wiring, ERRORS)


def main() -> None:
    run_main(NAME, GatewayConfig.from_env, wiring, ERRORS)
