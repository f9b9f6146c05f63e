"""The gateway's configuration from IDMESH_* variables: defaults, and failing fast."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.config import ConfigError, Env
from services.common.storage import Engine
from services.messenger_gateway.config import GatewayConfig

REPO = Path(__file__).resolve().parents[2]


def _env(**overrides: str) -> Env:
    base = {
        "IDMESH_MESSENGER_ID": "alpha",
        "IDMESH_DB_PATH": "/tmp/gw/gateway.db",
        "IDMESH_OPERATORS": "beeline=127.0.0.1:50051,megafon=127.0.0.1:50052",
        "IDMESH_CARRIERS": "Beeline=beeline,MegaFon=megafon",
        "IDMESH_NOTIFIER_ADDRESS": "127.0.0.1:50060",
        "IDMESH_INSECURE_DEV_MODE": "true",
    }
    base.update({f"IDMESH_{k}": v for k, v in overrides.items()})
    return Env(base)


def test_defaults() -> None:
    config = GatewayConfig.from_env(_env())
    assert config.server.bind == "127.0.0.1:50070"
    assert config.operators == {"beeline": "127.0.0.1:50051", "megafon": "127.0.0.1:50052"}
    assert config.carriers == {"Beeline": "beeline", "MegaFon": "megafon"}
    assert config.sms_outbox == Path("/tmp/gw/sms-outbox.jsonl")
    assert config.numbering_plan is None
    assert (config.verification_window_seconds, config.otp_ttl_seconds) == (1200.0, 300.0)
    assert config.otp_max_attempts == 5
    assert (config.verify_retry_initial_seconds, config.verify_retry_max_seconds) == (0.2, 10.0)
    assert config.store.db_synchronous == "NORMAL"
    assert config.allowed_countries == {"RU"}


def test_allowed_countries_are_a_list_of_regions_or_any() -> None:
    config = GatewayConfig.from_env(_env(ALLOWED_COUNTRIES="ru, by"))
    assert config.allowed_countries == {"RU", "BY"}
    assert GatewayConfig.from_env(_env(ALLOWED_COUNTRIES="*")).allowed_countries == frozenset()


def test_the_numbering_plan_is_loaded_at_start() -> None:
    config = GatewayConfig.from_env(
        _env(NUMBERING_PLAN=str(REPO / "deploy" / "numbering-plan.csv"))
    )
    assert config.numbering_plan is not None
    assert config.numbering_plan.carrier_for("+79161234567") == "MTS"


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"MESSENGER_ID": ""}, "IDMESH_MESSENGER_ID: required"),
        ({"MESSENGER_ID": "Alpha!"}, "IDMESH_MESSENGER_ID"),
        ({"DB_PATH": ""}, "IDMESH_DB_PATH: required"),
        ({"OPERATORS": ""}, "IDMESH_OPERATORS: required"),
        ({"OPERATORS": "beeline=nowhere"}, "IDMESH_OPERATORS: expected host:port"),
        ({"CARRIERS": "Beeline=beeline,T2=tele2"}, "IDMESH_CARRIERS: T2=tele2"),
        ({"CARRIERS": "Beeline=beeline,BEELINE=beeline"}, "same ignoring case"),
        ({"NOTIFIER_ADDRESS": ""}, "IDMESH_NOTIFIER_ADDRESS: required"),
        ({"NUMBERING_PLAN": "/nonexistent/plan.csv"}, "IDMESH_NUMBERING_PLAN: .*cannot read"),
        ({"VERIFICATION_WINDOW_SECONDS": "0"}, "IDMESH_VERIFICATION_WINDOW_SECONDS"),
        ({"OTP_MAX_ATTEMPTS": "0"}, "IDMESH_OTP_MAX_ATTEMPTS"),
        ({"DB_SYNCHRONOUS": "sometimes"}, "IDMESH_DB_SYNCHRONOUS"),
        ({"DATABASE_URL": "mysql://db/gw"}, "IDMESH_DATABASE_URL: expected a postgresql"),
        ({"ALLOWED_COUNTRIES": "Russia"}, "IDMESH_ALLOWED_COUNTRIES: expected ISO 3166"),
    ],
)
def test_bad_configuration_names_the_variable(overrides: dict[str, str], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        GatewayConfig.from_env(_env(**overrides))


def test_a_database_url_puts_the_stores_on_postgresql() -> None:
    config = GatewayConfig.from_env(_env(DATABASE_URL="postgresql://gw:secret@db:5432/alpha"))
    assert config.store.engine is Engine.POSTGRESQL
    assert config.store.describe() == "postgresql:db/alpha"  # no password
    assert config.otp_key_file == Path("/tmp/gw/otp-hmac.key")  # DB_PATH's folder: defaults


def test_the_delivery_policy_settings() -> None:
    config = GatewayConfig.from_env(_env())
    assert (config.policy_refuse_unaccepted, config.policy_poll_seconds) == (False, 0.25)
    assert config.policy_change_retention_seconds == 7 * 86400
    config = GatewayConfig.from_env(
        _env(POLICY_UNACCEPTED_DEFAULT="Refuse", POLICY_POLL_SECONDS="1.5")
    )
    assert (config.policy_refuse_unaccepted, config.policy_poll_seconds) == (True, 1.5)


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"POLICY_UNACCEPTED_DEFAULT": "maybe"}, "IDMESH_POLICY_UNACCEPTED_DEFAULT: expected"),
        ({"POLICY_POLL_SECONDS": "0"}, "IDMESH_POLICY_POLL_SECONDS"),
        ({"POLICY_CHANGE_RETENTION_SECONDS": "1"}, "IDMESH_POLICY_CHANGE_RETENTION_SECONDS"),
    ],
)
def test_bad_delivery_policy_settings_name_the_variable(
    overrides: dict[str, str], problem: str
) -> None:
    with pytest.raises(ConfigError, match=problem):
        GatewayConfig.from_env(_env(**overrides))


def test_the_replica_id_and_the_lease_term() -> None:
    config = GatewayConfig.from_env(_env())
    assert (config.replica_id, config.lease_seconds) == (None, 6.0)  # None: per engine
    config = GatewayConfig.from_env(_env(REPLICA_ID="gateway-alpha-2", LEASE_SECONDS="10"))
    assert (config.replica_id, config.lease_seconds) == ("gateway-alpha-2", 10.0)


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"REPLICA_ID": "pod one"}, "IDMESH_REPLICA_ID"),
        ({"REPLICA_ID": "x" * 129}, "IDMESH_REPLICA_ID"),
        ({"LEASE_SECONDS": "0.1"}, "IDMESH_LEASE_SECONDS"),
        ({"LEASE_SECONDS": "soon"}, "IDMESH_LEASE_SECONDS"),
    ],
)
def test_bad_replica_settings_name_the_variable(overrides: dict[str, str], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        GatewayConfig.from_env(_env(**overrides))


def test_policy_shards_are_off_by_default_and_advertise_the_bind_address() -> None:
    config = GatewayConfig.from_env(_env())
    assert config.policy_shards == 0
    sharded = GatewayConfig.from_env(_env(POLICY_SHARDS="64", BIND="10.0.0.7:50070"))
    assert sharded.policy_shards == 64
    assert sharded.advertise_address == "10.0.0.7:50070"
    given = GatewayConfig.from_env(
        _env(POLICY_SHARDS="64", BIND="0.0.0.0:50070", ADVERTISE_ADDRESS="10.0.0.7:50070")
    )
    assert given.advertise_address == "10.0.0.7:50070"


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"POLICY_SHARDS": "64", "BIND": "0.0.0.0:50070"}, "IDMESH_ADVERTISE_ADDRESS"),
        ({"POLICY_SHARDS": "5000"}, "IDMESH_POLICY_SHARDS"),
        ({"POLICY_SHARDS": "-1"}, "IDMESH_POLICY_SHARDS"),
        ({"ADVERTISE_ADDRESS": "no-port"}, "IDMESH_ADVERTISE_ADDRESS"),
    ],
)
def test_bad_shard_settings_are_refused_naming_the_variable(
    overrides: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError, match=named):
        GatewayConfig.from_env(_env(**overrides))
