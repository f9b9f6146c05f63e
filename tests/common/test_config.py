"""Configuration fails fast with a message that names the variable."""

import stat
from pathlib import Path

import pytest

from services.common.config import ConfigError, Env, ServerSettings
from services.common.keyfile import load_or_create_key


def test_missing_required_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="IDMESH_DB_PATH: required, not set"):
        Env({}).path("DB_PATH")


def test_bad_integer_names_the_variable_and_value() -> None:
    with pytest.raises(ConfigError, match=r"IDMESH_PORT: expected an integer, got 'x'"):
        Env({"IDMESH_PORT": "x"}).int("PORT")


def test_out_of_range_number_is_refused() -> None:
    with pytest.raises(ConfigError, match="at least 1"):
        Env({"IDMESH_WINDOW": "0"}).float("WINDOW", minimum=1)


def test_mapping_parses_pairs_and_refuses_malformed_items() -> None:
    env = Env({"IDMESH_OPS": "beeline=127.0.0.1:1, megafon=127.0.0.1:2"})
    assert env.mapping("OPS") == {"beeline": "127.0.0.1:1", "megafon": "127.0.0.1:2"}
    with pytest.raises(ConfigError, match="key=value"):
        Env({"IDMESH_OPS": "beeline"}).mapping("OPS")
    with pytest.raises(ConfigError, match="given twice"):
        Env({"IDMESH_OPS": "a=1,a=2"}).mapping("OPS")


def test_bool_accepts_common_spellings_only() -> None:
    assert Env({"IDMESH_X": "yes"}).bool("X") is True
    assert Env({"IDMESH_X": "off"}).bool("X") is False
    with pytest.raises(ConfigError, match="true or false"):
        Env({"IDMESH_X": "maybe"}).bool("X")


def test_server_settings_validate_bind_and_log_settings() -> None:
    dev = {"IDMESH_INSECURE_DEV_MODE": "true"}
    settings = ServerSettings.from_env(Env(dev), default_bind="127.0.0.1:1")
    assert settings.bind == "127.0.0.1:1"
    assert settings.launcher_fd is None  # no launcher to outlive unless one says so
    with_launcher = Env({**dev, "IDMESH_LAUNCHER_FD": "7"})
    assert ServerSettings.from_env(with_launcher, default_bind="127.0.0.1:1").launcher_fd == 7
    with pytest.raises(ConfigError, match="IDMESH_BIND: expected host:port"):
        ServerSettings.from_env(Env({**dev, "IDMESH_BIND": "nope"}), default_bind="127.0.0.1:1")
    with pytest.raises(ConfigError, match="IDMESH_LOG_FORMAT"):
        ServerSettings.from_env(
            Env({**dev, "IDMESH_LOG_FORMAT": "xml"}), default_bind="127.0.0.1:1"
        )


def test_mutual_tls_is_required_unless_the_development_switch_is_on() -> None:
    with pytest.raises(ConfigError, match="IDMESH_TLS_CA, IDMESH_TLS_CERT, IDMESH_TLS_KEY"):
        ServerSettings.from_env(Env({}), default_bind="127.0.0.1:1")
    with pytest.raises(ConfigError, match="choose mutual TLS or the plaintext"):
        ServerSettings.from_env(
            Env({"IDMESH_INSECURE_DEV_MODE": "true", "IDMESH_TLS_CERT": "x"}),
            default_bind="127.0.0.1:1",
        )
    with pytest.raises(ConfigError, match="IDMESH_TLS_CA: no such file"):
        ServerSettings.from_env(
            Env({"IDMESH_TLS_CA": "/no/ca", "IDMESH_TLS_CERT": "/no/c", "IDMESH_TLS_KEY": "/no/k"}),
            default_bind="127.0.0.1:1",
        )


def test_a_key_file_is_created_owner_only_once_and_then_reused(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "otp.key"
    key = load_or_create_key(path)
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(path) == key
    path.write_bytes(b"short")
    with pytest.raises(ValueError, match="at least 16"):
        load_or_create_key(path)
