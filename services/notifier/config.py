"""The notifier's configuration, from IDMESH_* environment variables (fail fast, name the variable).

IDMESH_DATABASE_URL                postgresql://...: the store on PostgreSQL (replicas share it)
IDMESH_DB_PATH                     without IDMESH_DATABASE_URL, required: the SQLite file
IDMESH_DB_SYNCHRONOUS              NORMAL (default), FULL, EXTRA or OFF (services.common.storage)
IDMESH_BIND                        127.0.0.1:50060 (and the other ServerSettings variables)
IDMESH_PROGRESS_INTERVAL_SECONDS   5: a progress mark after this long idle on a stream
IDMESH_STREAM_BUFFER               256: notices buffered per stream
IDMESH_STREAM_BATCH                256: most notices in a message of a batching stream (1 to 1000)
IDMESH_SLOW_CONSUMER_SECONDS       10: a full buffer for this long ends the stream
IDMESH_SLA_CHECK_SECONDS           60: how often the delivery SLA is checked
IDMESH_SLA_WARNING_SECONDS         43200 (12 h): warn when the oldest unacked event is older
IDMESH_SLA_LIMIT_SECONDS           86400 (24 h): the legal limit; logged as an error past it
IDMESH_RETENTION_DAYS              7 (the minimum): acknowledged events are kept this long
IDMESH_PRUNE_INTERVAL_SECONDS      3600: how often acknowledged old events are pruned
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from services.common.config import ConfigError, Env, ServerSettings
from services.common.storage import StoreSettings
from services.notifier.domain import MIN_RETENTION_DAYS, DeliveryPolicy, StreamPolicy

DEFAULT_BIND = "127.0.0.1:50060"


@dataclass(frozen=True, slots=True)
class NotifierConfig:
    server: ServerSettings
    store: StoreSettings
    streams: StreamPolicy
    delivery: DeliveryPolicy
    sla_check_seconds: float
    prune_interval_seconds: float

    @classmethod
    def from_env(cls, env: Env) -> NotifierConfig:
        warning = env.float("SLA_WARNING_SECONDS", 43_200.0, minimum=1)
        limit = env.float("SLA_LIMIT_SECONDS", 86_400.0, minimum=1)
        if warning > limit:
            raise ConfigError(
                f"{env.name('SLA_WARNING_SECONDS')}: must not exceed "
                f"{env.name('SLA_LIMIT_SECONDS')} ({limit:g}), got {warning:g}: "
                "the warning has to come before the limit"
            )
        return cls(
            server=ServerSettings.from_env(env, default_bind=DEFAULT_BIND),
            store=StoreSettings.from_env(env),
            streams=StreamPolicy(
                buffer=env.int("STREAM_BUFFER", 256, minimum=1, maximum=100_000),
                batch=env.int("STREAM_BATCH", 256, minimum=1, maximum=1000),
                slow_consumer_seconds=env.float("SLOW_CONSUMER_SECONDS", 10.0, minimum=0.001),
                progress_interval_seconds=env.float(
                    "PROGRESS_INTERVAL_SECONDS", 5.0, minimum=0.001
                ),
            ),
            delivery=DeliveryPolicy(
                sla_warning=timedelta(seconds=warning),
                sla_limit=timedelta(seconds=limit),
                retention=timedelta(
                    days=env.int("RETENTION_DAYS", MIN_RETENTION_DAYS, minimum=MIN_RETENTION_DAYS)
                ),
            ),
            sla_check_seconds=env.float("SLA_CHECK_SECONDS", 60.0, minimum=0.001),
            prune_interval_seconds=env.float("PRUNE_INTERVAL_SECONDS", 3600.0, minimum=0.001),
        )
