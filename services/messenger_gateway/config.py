"""The gateway's configuration, from IDMESH_* environment variables (fail fast, name the variable).

IDMESH_MESSENGER_ID                  this messenger's id (required)
IDMESH_DB_PATH                       the SQLite file (required; with IDMESH_DATABASE_URL, which
                                     puts both stores, identifications and the delivery
                                     policy, on PostgreSQL for several replicas, only the
                                     folder of the defaults below: see services.common.storage)
IDMESH_OPERATORS                     operator id -> registry address (required):
                                     "beeline=127.0.0.1:50051,megafon=127.0.0.1:50052"
IDMESH_CARRIERS                      carrier name -> operator id: "Beeline=beeline"
                                     (default none)
IDMESH_NUMBERING_PLAN                Rossvyaz range table (optional; loaded at start)
IDMESH_NOTIFIER_ADDRESS              the notifier (required)
IDMESH_ALLOWED_COUNTRIES             ISO 3166 regions whose numbers may be identified,
                                     comma-separated (default RU; "*" for any)
IDMESH_SMS_OUTBOX                    dev SMS channel file (default <DB dir>/sms-outbox.jsonl)
IDMESH_VERIFICATION_WINDOW_SECONDS   the operator's answer is due within (default 1200)
IDMESH_OTP_TTL_SECONDS               one-time code lifetime (default 300)
IDMESH_OTP_MAX_ATTEMPTS              wrong codes allowed (default 5)
IDMESH_OTP_PHONE_PER_HOUR, _BURST    one-time codes per phone number (default 10 per hour, burst 5)
IDMESH_OTP_USER_PER_HOUR, _BURST     one-time codes per user (default 20 per hour, burst 10)
IDMESH_OTP_KEY_FILE                  the secret key of one-time-code hashes, 0600, made if
                                     missing (default <dir of DB_PATH>/otp-hmac.key); the
                                     replicas of a gateway must share it
IDMESH_VERIFY_RETRY_INITIAL_SECONDS  retry of an unavailable operator (default 0.2)
IDMESH_VERIFY_RETRY_MAX_SECONDS      ... capped at (default 10)
IDMESH_NOTIFIER_RETRY_INITIAL_SECONDS  reconnect to the notifier (default 0.5)
IDMESH_NOTIFIER_RETRY_MAX_SECONDS      ... capped at (default 30)
IDMESH_REPLICA_ID                    this replica's id, the holder of its leases (default: the
                                     host name; with IDMESH_DATABASE_URL, host name-process id)
IDMESH_LEASE_SECONDS                 the term of a replica's leases on its pending verifications
                                     and on the notice consumer (default 6): renewed every third
                                     of it, taken over by another replica after it
IDMESH_POLICY_SHARDS                 divide the delivery policy into this many shards by user, each
                                     served by one replica (default 0: every replica holds the
                                     whole policy); the same on every replica (docs/policy.md)
IDMESH_ADVERTISE_ADDRESS             host:port the other replicas reach this one's gRPC port at,
                                     for decisions on its shards (default IDMESH_BIND, unless it
                                     binds every interface: then required with POLICY_SHARDS)
IDMESH_DB_SYNCHRONOUS                SQLite synchronous: NORMAL (default) or FULL, ...
plus ServerSettings: IDMESH_BIND (default 127.0.0.1:50070), IDMESH_LOG_LEVEL, ...
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import phonenumbers

from services.common.config import ConfigError, Env, ServerSettings
from services.common.errors import InvalidInput
from services.common.identity import validate_id
from services.common.ratelimit import RateLimit
from services.common.storage import StoreSettings
from services.messenger_gateway.policy.shards import MAX_SHARDS
from services.messenger_gateway.routing.router import NumberingPlan, NumberingPlanError

DEFAULT_BIND = "127.0.0.1:50070"


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    server: ServerSettings
    messenger_id: str
    db_path: Path
    store: StoreSettings
    operators: Mapping[str, str]  # operator id -> registry address
    carriers: Mapping[str, str]  # carrier name -> operator id
    notifier_address: str
    sms_outbox: Path
    numbering_plan: NumberingPlan | None = field(default=None, repr=False)
    numbering_plan_path: Path | None = None
    verification_window_seconds: float = 1200.0
    otp_ttl_seconds: float = 300.0
    otp_max_attempts: int = 5
    verify_retry_initial_seconds: float = 0.2
    verify_retry_max_seconds: float = 10.0
    notifier_retry_initial_seconds: float = 0.5
    notifier_retry_max_seconds: float = 30.0
    otp_phone_limit: RateLimit | None = None
    otp_user_limit: RateLimit | None = None
    otp_key_file: Path | None = None  # None: <dir of DB_PATH>/otp-hmac.key
    allowed_countries: frozenset[str] = frozenset({"RU"})  # empty: any
    # The delivery policy: the default for users without an unaccepted-sender policy, how often
    # other replicas' changes are applied, and how long the change log is kept.
    policy_refuse_unaccepted: bool = False
    policy_poll_seconds: float = 0.25
    policy_change_retention_seconds: float = 7 * 86400.0
    # Replicas (services/common/lease.py): this one's id (None: the default for the engine) and
    # the term of its leases.
    replica_id: str | None = None
    lease_seconds: float = 6.0
    # The delivery policy in shards (0: the whole of it here) and where this replica is reached.
    policy_shards: int = 0
    advertise_address: str = ""

    @classmethod
    def from_env(cls, env: Env) -> GatewayConfig:
        server = ServerSettings.from_env(env, default_bind=DEFAULT_BIND)
        messenger_id = env.str("MESSENGER_ID")
        try:
            validate_id(messenger_id, env.name("MESSENGER_ID"))
        except InvalidInput as exc:
            raise ConfigError(exc.message) from None
        db_path = env.path("DB_PATH")
        store = StoreSettings.from_env(env)
        operators: dict[str, str] = env.mapping("OPERATORS")
        for operator_id, address in operators.items():
            try:
                validate_id(operator_id, "operator id")
            except InvalidInput as exc:
                raise ConfigError(f"{env.name('OPERATORS')}: {exc.message}") from None
            _require_address(env, "OPERATORS", address, f" (operator {operator_id})")
        carriers: dict[str, str] = env.mapping("CARRIERS", {})
        seen: dict[str, str] = {}
        for name, operator_id in carriers.items():
            if operator_id not in operators:
                raise ConfigError(
                    f"{env.name('CARRIERS')}: {name}={operator_id} names operator "
                    f"{operator_id!r}, which is not in {env.name('OPERATORS')} "
                    f"({', '.join(sorted(operators))})"
                )
            key = " ".join(name.split()).casefold()
            if key in seen:
                raise ConfigError(
                    f"{env.name('CARRIERS')}: carrier names {seen[key]!r} and {name!r} are the "
                    "same ignoring case"
                )
            seen[key] = name
        notifier_address = env.str("NOTIFIER_ADDRESS")
        _require_address(env, "NOTIFIER_ADDRESS", notifier_address)
        plan_path: Path | None = None
        plan: NumberingPlan | None = None
        raw_plan = env.str("NUMBERING_PLAN", "")
        if raw_plan:
            plan_path = Path(raw_plan)
            try:
                plan = NumberingPlan.load(plan_path)
            except NumberingPlanError as exc:
                raise ConfigError(f"{env.name('NUMBERING_PLAN')}: {exc}") from None
        retry_initial = env.float("VERIFY_RETRY_INITIAL_SECONDS", 0.2, minimum=0.001)
        retry_max = env.float("VERIFY_RETRY_MAX_SECONDS", 10.0, minimum=retry_initial)
        notifier_initial = env.float("NOTIFIER_RETRY_INITIAL_SECONDS", 0.5, minimum=0.001)
        notifier_max = env.float("NOTIFIER_RETRY_MAX_SECONDS", 30.0, minimum=notifier_initial)
        return cls(
            server=server,
            allowed_countries=_allowed_countries(env),
            messenger_id=messenger_id,
            db_path=db_path,
            store=store,
            operators=operators,
            carriers=carriers,
            notifier_address=notifier_address,
            sms_outbox=env.path("SMS_OUTBOX", db_path.parent / "sms-outbox.jsonl"),
            numbering_plan=plan,
            numbering_plan_path=plan_path,
            verification_window_seconds=env.float(
                "VERIFICATION_WINDOW_SECONDS", 1200.0, minimum=0.1
            ),
            otp_ttl_seconds=env.float("OTP_TTL_SECONDS", 300.0, minimum=1),
            otp_max_attempts=env.int("OTP_MAX_ATTEMPTS", 5, minimum=1, maximum=100),
            verify_retry_initial_seconds=retry_initial,
            verify_retry_max_seconds=retry_max,
            notifier_retry_initial_seconds=notifier_initial,
            notifier_retry_max_seconds=notifier_max,
            otp_phone_limit=RateLimit.from_env(env, "OTP_PHONE", per_hour=10, burst=5),
            otp_user_limit=RateLimit.from_env(env, "OTP_USER", per_hour=20, burst=10),
            otp_key_file=env.path("OTP_KEY_FILE", db_path.parent / "otp-hmac.key"),
            policy_refuse_unaccepted=_unaccepted_default(env),
            policy_poll_seconds=env.float("POLICY_POLL_SECONDS", 0.25, minimum=0.01),
            policy_change_retention_seconds=env.float(
                "POLICY_CHANGE_RETENTION_SECONDS", 7 * 86400.0, minimum=60
            ),
            replica_id=_replica_id(env),
            lease_seconds=env.float("LEASE_SECONDS", 6.0, minimum=0.3, maximum=3600.0),
            policy_shards=env.int("POLICY_SHARDS", 0, minimum=0, maximum=MAX_SHARDS),
            advertise_address=_advertise_address(env, server.bind),
        )


def _advertise_address(env: Env, bind: str) -> str:
    """IDMESH_ADVERTISE_ADDRESS, or the bind address when it names one interface; required
    (ConfigError) with POLICY_SHARDS when the bind address is every interface's."""
    value = env.str("ADVERTISE_ADDRESS", "")
    if value:
        _require_address(env, "ADVERTISE_ADDRESS", value)
        return value
    host = bind.rpartition(":")[0].strip("[]")
    if host in ("0.0.0.0", "::", ""):
        if env.int("POLICY_SHARDS", 0, minimum=0, maximum=MAX_SHARDS):
            raise ConfigError(
                f"{env.name('ADVERTISE_ADDRESS')}: required with {env.name('POLICY_SHARDS')} "
                f"when {env.name('BIND')} ({bind}) binds every interface: give the host:port "
                "the other replicas reach this one at"
            )
        return ""
    return bind


def _allowed_countries(env: Env) -> frozenset[str]:
    raw = env.str("ALLOWED_COUNTRIES", "RU").strip()
    if raw == "*":
        return frozenset()
    regions = frozenset(part.strip().upper() for part in raw.split(",") if part.strip())
    unknown = sorted(r for r in regions if r not in phonenumbers.SUPPORTED_REGIONS)
    if not regions or unknown:
        raise ConfigError(
            f"{env.name('ALLOWED_COUNTRIES')}: expected ISO 3166 region codes such as RU,BY "
            f"(or * for any), got {raw[:40]!r}"
        )
    return regions


def _replica_id(env: Env) -> str | None:
    """IDMESH_REPLICA_ID: printable, without spaces, at most 128 characters; None if unset."""
    value = env.str("REPLICA_ID", "")
    if not value:
        return None
    if len(value) > 128 or not value.isprintable() or any(c.isspace() for c in value):
        raise ConfigError(
            f"{env.name('REPLICA_ID')}: expected at most 128 printable characters without "
            f"spaces (a pod or host name), got {value[:40]!r}"
        )
    return value


def _unaccepted_default(env: Env) -> bool:
    """IDMESH_POLICY_UNACCEPTED_DEFAULT: allow (the default) or refuse."""
    value = env.str("POLICY_UNACCEPTED_DEFAULT", "allow").lower()
    if value not in ("allow", "refuse"):
        raise ConfigError(
            f"{env.name('POLICY_UNACCEPTED_DEFAULT')}: expected allow or refuse, got {value!r}"
        )
    return value == "refuse"


def _require_address(env: Env, key: str, address: str, what: str = "") -> None:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ConfigError(f"{env.name(key)}: expected host:port{what}, got {address!r}")
