"""The registry's configuration, from IDMESH_* environment variables (fail fast).

IDMESH_OPERATOR_ID          required: this registry's operator (lowercase letters, digits, '-')
IDMESH_DATABASE_URL         postgresql://...: the store on PostgreSQL (replicas share it)
IDMESH_DB_PATH              without IDMESH_DATABASE_URL, required: the SQLite file
IDMESH_NOTIFIER_ADDRESS     required: the notifier, host:port
IDMESH_SEED_FILE            optional: JSON seed applied at start (see seed.py)
IDMESH_RELAY_BATCH_SIZE     notices per Publish call, 1..1000 (default 500)
IDMESH_RELAY_POLL_SECONDS   outbox poll interval when idle (default 1.0)
IDMESH_RELAY_RETRY_MAX_SECONDS  longest delay between failed Publish attempts (default 10; the
                            delays grow from 0.5 s with jitter)
IDMESH_DB_SYNCHRONOUS       SQLite synchronous: OFF, NORMAL, FULL or EXTRA (default NORMAL)
                            (these three: services.common.storage)
IDMESH_VERIFY_PER_HOUR      VerifySubscriber requests per messenger per hour (default 360000)
IDMESH_VERIFY_BURST         ... and the burst above that rate (default 200)
IDMESH_AUDIT_RETENTION_DAYS how long verification audit records are kept (default 365)
IDMESH_VERIFICATION_RETENTION_DAYS
                            how long VerifySubscriber answers are kept for replays of their
                            idempotency key (default 30; at least 1, far beyond any gateway's
                            verification window)
IDMESH_RECORDS_BEGIN_AT     optional, RFC 3339: when this registry's record keeping began, for
                            CheckNumberReassigned's NO_DATA (default: the earlier of the
                            database's creation time and the earliest contract activation)
plus the common IDMESH_BIND (default 127.0.0.1:50051), IDMESH_LOG_LEVEL, IDMESH_LOG_FORMAT,
IDMESH_SHUTDOWN_GRACE_SECONDS (services.common.config.ServerSettings).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from services.common.config import ConfigError, Env, ServerSettings
from services.common.errors import InvalidInput
from services.common.identity import validate_id
from services.common.ratelimit import RateLimit
from services.common.storage import StoreSettings

DEFAULT_BIND = "127.0.0.1:50051"


@dataclass(frozen=True, slots=True)
class RegistryConfig:
    server: ServerSettings
    operator_id: str
    store: StoreSettings
    notifier_address: str
    seed_file: Path | None
    relay_batch_size: int
    relay_poll_seconds: float
    relay_retry_max_seconds: float
    records_begin_at: datetime | None = None
    verify_limit: RateLimit | None = None
    audit_retention: timedelta = timedelta(days=365)
    verification_retention: timedelta = timedelta(days=30)

    @classmethod
    def from_env(cls, env: Env) -> RegistryConfig:
        server = ServerSettings.from_env(env, default_bind=DEFAULT_BIND)
        operator_id = env.str("OPERATOR_ID")
        try:
            validate_id(operator_id, "operator id")
        except InvalidInput as exc:
            raise ConfigError(f"{env.name('OPERATOR_ID')}: {exc.message}") from None
        notifier_address = env.str("NOTIFIER_ADDRESS")
        host, sep, port = notifier_address.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
            raise ConfigError(
                f"{env.name('NOTIFIER_ADDRESS')}: expected host:port, got {notifier_address!r}"
            )
        seed_raw = env.str("SEED_FILE", "")
        seed_file = Path(seed_raw) if seed_raw else None
        if seed_file is not None and not seed_file.is_file():
            raise ConfigError(f"{env.name('SEED_FILE')}: {str(seed_file)!r} is not a file")
        return cls(
            server=server,
            operator_id=operator_id,
            store=StoreSettings.from_env(env),
            notifier_address=notifier_address,
            seed_file=seed_file,
            relay_batch_size=env.int("RELAY_BATCH_SIZE", 500, minimum=1, maximum=1000),
            relay_poll_seconds=env.float("RELAY_POLL_SECONDS", 1.0, minimum=0.01, maximum=3600),
            relay_retry_max_seconds=env.float(
                "RELAY_RETRY_MAX_SECONDS", 10.0, minimum=0.5, maximum=3600
            ),
            records_begin_at=_records_begin_at(env),
            verify_limit=RateLimit.from_env(env, "VERIFY", per_hour=360_000, burst=200),
            audit_retention=timedelta(days=env.int("AUDIT_RETENTION_DAYS", 365, minimum=1)),
            verification_retention=timedelta(
                days=env.int("VERIFICATION_RETENTION_DAYS", 30, minimum=1)
            ),
        )


def _records_begin_at(env: Env) -> datetime | None:
    raw = env.str("RECORDS_BEGIN_AT", "")
    if not raw:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise ConfigError(
            f"{env.name('RECORDS_BEGIN_AT')}: expected an RFC 3339 time such as "
            f"2019-05-05T00:00:00Z, got {raw!r}"
        ) from None
    if value.tzinfo is None:
        raise ConfigError(
            f"{env.name('RECORDS_BEGIN_AT')}: {raw!r} has no time zone: add one, such as Z for UTC"
        )
    return value.astimezone(UTC)
