"""The registry's configuration: defaults, and errors that name the variable."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from services.common.config import ConfigError, Env
from services.operator_registry.config import RegistryConfig

REQUIRED = {
    "IDMESH_OPERATOR_ID": "beeline",
    "IDMESH_DB_PATH": "/tmp/reg.db",
    "IDMESH_NOTIFIER_ADDRESS": "127.0.0.1:50060",
    "IDMESH_INSECURE_DEV_MODE": "true",
}


def test_defaults() -> None:
    config = RegistryConfig.from_env(Env(REQUIRED))
    assert config.operator_id == "beeline"
    assert config.store.db_path == Path("/tmp/reg.db")
    assert config.notifier_address == "127.0.0.1:50060"
    assert config.server.bind == "127.0.0.1:50051"
    assert config.seed_file is None
    assert config.relay_batch_size == 500
    assert config.relay_poll_seconds == 1.0
    assert config.store.db_synchronous == "NORMAL"
    assert config.verification_retention == timedelta(days=30)


def test_all_values_are_read(tmp_path: Path) -> None:
    seed = tmp_path / "seed.json"
    seed.write_text("{}")
    env = {
        **REQUIRED,
        "IDMESH_BIND": "0.0.0.0:6000",
        "IDMESH_SEED_FILE": str(seed),
        "IDMESH_RELAY_BATCH_SIZE": "10",
        "IDMESH_RELAY_POLL_SECONDS": "0.25",
        "IDMESH_DB_SYNCHRONOUS": "full",
        "IDMESH_VERIFICATION_RETENTION_DAYS": "2",
    }
    config = RegistryConfig.from_env(Env(env))
    assert config.server.bind == "0.0.0.0:6000"
    assert config.seed_file == seed
    assert (config.relay_batch_size, config.relay_poll_seconds) == (10, 0.25)
    assert config.store.db_synchronous == "FULL"
    assert config.verification_retention == timedelta(days=2)


@pytest.mark.parametrize("missing", sorted(set(REQUIRED) - {"IDMESH_INSECURE_DEV_MODE"}))
def test_missing_required_variable_is_named(missing: str) -> None:
    env = {k: v for k, v in REQUIRED.items() if k != missing}
    with pytest.raises(ConfigError, match=f"^{missing}: required, not set"):
        RegistryConfig.from_env(Env(env))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("IDMESH_OPERATOR_ID", "Bee Line"),
        ("IDMESH_NOTIFIER_ADDRESS", "localhost"),
        ("IDMESH_NOTIFIER_ADDRESS", "localhost:0"),
        ("IDMESH_SEED_FILE", "/nonexistent/seed.json"),
        ("IDMESH_RELAY_BATCH_SIZE", "0"),
        ("IDMESH_RELAY_BATCH_SIZE", "1001"),
        ("IDMESH_RELAY_POLL_SECONDS", "soon"),
        ("IDMESH_RELAY_POLL_SECONDS", "0"),
        ("IDMESH_DB_SYNCHRONOUS", "SOMETIMES"),
        ("IDMESH_BIND", "nowhere"),
        ("IDMESH_VERIFICATION_RETENTION_DAYS", "0"),
    ],
)
def test_bad_value_is_refused_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"^{name}: "):
        RegistryConfig.from_env(Env({**REQUIRED, name: value}))
