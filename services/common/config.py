"""Configuration from environment variables, failing fast with a message that names the variable.

    env = Env()                       # reads os.environ, names prefixed with IDMESH_
    port = env.int("PORT", default=50051, minimum=0, maximum=65535)

Every getter raises ConfigError("IDMESH_PORT: expected an integer, got 'x'") on a bad value and
("IDMESH_DB_PATH: required, not set") on a missing required one.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from services.common.tls import CredentialsError, TlsFiles

PREFIX: Final = "IDMESH_"


class ConfigError(Exception):
    """A missing or bad configuration value; the message names the variable."""


class _Missing:
    pass


_MISSING: Final = _Missing()


class Env:
    def __init__(
        self, environ: Mapping[str, builtins.str] | None = None, prefix: builtins.str = PREFIX
    ) -> None:
        self._environ = os.environ if environ is None else environ
        self._prefix = prefix

    def name(self, key: builtins.str) -> builtins.str:
        return f"{self._prefix}{key}"

    def _raw(self, key: builtins.str, default: object) -> builtins.str | None:
        value = self._environ.get(self.name(key))
        if value is None or value.strip() == "":
            if isinstance(default, _Missing):
                raise ConfigError(f"{self.name(key)}: required, not set")
            return None
        return value.strip()

    def str(self, key: builtins.str, default: builtins.str | _Missing = _MISSING) -> builtins.str:
        raw = self._raw(key, default)
        return default if raw is None else raw  # type: ignore[return-value]

    def int(
        self,
        key: builtins.str,
        default: builtins.int | _Missing = _MISSING,
        *,
        minimum: builtins.int | None = None,
        maximum: builtins.int | None = None,
    ) -> builtins.int:
        raw = self._raw(key, default)
        if raw is None:
            return default  # type: ignore[return-value]
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{self.name(key)}: expected an integer, got {raw!r}") from None
        self._check_range(key, value, minimum, maximum)
        return value

    def float(
        self,
        key: builtins.str,
        default: builtins.float | _Missing = _MISSING,
        *,
        minimum: builtins.float | None = None,
        maximum: builtins.float | None = None,
    ) -> builtins.float:
        """A number, for example seconds: "1200" or "0.5"."""
        raw = self._raw(key, default)
        if raw is None:
            return default  # type: ignore[return-value]
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{self.name(key)}: expected a number, got {raw!r}") from None
        self._check_range(key, value, minimum, maximum)
        return value

    def bool(
        self, key: builtins.str, default: builtins.bool | _Missing = _MISSING
    ) -> builtins.bool:
        raw = self._raw(key, default)
        if raw is None:
            return default  # type: ignore[return-value]
        lowered = raw.lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        raise ConfigError(f"{self.name(key)}: expected true or false, got {raw!r}")

    def path(self, key: builtins.str, default: Path | _Missing = _MISSING) -> Path:
        raw = self._raw(key, default)
        return default if raw is None else Path(raw)  # type: ignore[return-value]

    def address(
        self, key: builtins.str, default: builtins.str | _Missing = _MISSING
    ) -> builtins.str:
        """A "host:port" address (the empty default means: not set)."""
        value = self.str(key, default)
        if value:
            check_address(self.name(key), value)
        return value

    def mapping(
        self, key: builtins.str, default: dict[builtins.str, builtins.str] | _Missing = _MISSING
    ) -> dict[builtins.str, builtins.str]:
        """Comma-separated key=value pairs: "beeline=127.0.0.1:50051,megafon=127.0.0.1:50052"."""
        raw = self._raw(key, default)
        if raw is None:
            return dict(default)  # type: ignore[arg-type]
        result: dict[builtins.str, builtins.str] = {}
        for item in raw.split(","):
            item = item.strip()
            if not item:
                continue
            k, sep, v = item.partition("=")
            if not sep or not k.strip() or not v.strip():
                raise ConfigError(
                    f"{self.name(key)}: expected comma-separated key=value pairs, got {item!r}"
                )
            if k.strip() in result:
                raise ConfigError(f"{self.name(key)}: key {k.strip()!r} given twice")
            result[k.strip()] = v.strip()
        return result

    def _check_range(
        self,
        key: builtins.str,
        value: builtins.float,
        minimum: builtins.float | None,
        maximum: builtins.float | None,
    ) -> None:
        if minimum is not None and value < minimum:
            raise ConfigError(f"{self.name(key)}: must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise ConfigError(f"{self.name(key)}: must be at most {maximum}, got {value}")


def check_address(name: str, value: str) -> None:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"{name}: expected host:port, got {value!r}")


INSECURE_SWITCH = "INSECURE_DEV_MODE"


@dataclass(frozen=True, slots=True)
class LimiterSettings:
    """Load shedding (services.common.overload): the adaptive bound on unary calls in flight."""

    initial: int = 128
    # never below: group commit (VerifySubscriber) gains from concurrency, and its latency rises
    # with it, which the gradient would read as queueing; 64 calls in flight is still a bounded
    # wait at any useful capacity (64 / 300 calls/s = 0.2 s)
    minimum: int = 64
    maximum: int = 1024
    tolerance: float = 2.0  # latency may reach this multiple of its long-run average
    smoothing: float = 0.2
    window_samples: int = 16  # the limit is updated once per window of completed calls
    long_window: int = 600  # windows in the long-run average (an exponential moving average)
    # calls queue in gRPC's core, unseen by the handlers' latency, when the event loop cannot
    # take them as fast as they come: a standing queue is one that every call of an interval
    # waited in for longer than max_queue_delay (overload.ConcurrencyLimiter.arrived)
    max_queue_delay: float = 0.1
    queue_interval: float = 0.1
    saturated_minimum: int = 4  # the floor of the limit while the loop is saturated
    saturated_hold: float = 2.0  # seconds the lower floor lasts after the loop was saturated
    # gRPC core's own bound on the calls waiting for the accept loop (grpc.server.
    # max_pending_requests; beyond it the core cancels calls at random, all of them beyond
    # three times it, as gRPC's defaults 1,000 and 3,000): the last resort when calls come
    # faster than a process can even refuse them
    max_pending: int = 1000
    enabled: bool = True

    @classmethod
    def from_env(cls, env: Env) -> LimiterSettings:
        """IDMESH_LOAD_SHEDDING (true), IDMESH_CONCURRENCY_LIMIT_MIN / _MAX / _INITIAL,
        IDMESH_MAX_QUEUE_DELAY_MS (100), IDMESH_GRPC_MAX_PENDING_REQUESTS (1000)."""
        default = cls()
        minimum = env.int("CONCURRENCY_LIMIT_MIN", default.minimum, minimum=1)
        maximum = env.int("CONCURRENCY_LIMIT_MAX", default.maximum, minimum=minimum)
        initial = env.int("CONCURRENCY_LIMIT_INITIAL", default.initial, minimum=1)
        queue_ms = env.float("MAX_QUEUE_DELAY_MS", default.max_queue_delay * 1000, minimum=1)
        pending = env.int("GRPC_MAX_PENDING_REQUESTS", default.max_pending, minimum=1)
        return cls(
            initial=max(minimum, min(initial, maximum)),
            minimum=minimum,
            maximum=maximum,
            max_queue_delay=queue_ms / 1000,
            max_pending=pending,
            saturated_minimum=min(default.saturated_minimum, minimum),
            enabled=env.bool("LOAD_SHEDDING", True),
        )


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """What every service reads the same way: where it listens, how it logs, how it stops, and
    its mutual-TLS credentials (None only behind the explicit development switch)."""

    bind: str
    log_level: str
    log_format: str  # "json", "console" or "auto" (console on a terminal)
    shutdown_grace: float
    metrics_bind: str | None = None  # host:port of the Prometheus /metrics endpoint; None: off
    health_bind: str | None = None  # host:port of a plaintext health-only port (probes); None: off
    tls: TlsFiles | None = None  # None: plaintext (IDMESH_INSECURE_DEV_MODE=true)
    # The read end of a pipe whose write end only the launcher holds (`idmesh up`, the tests'
    # Mesh): the service stops, as on SIGTERM, when it reads end-of-file, i.e. when the launcher
    # has died, however it died. None: no launcher to outlive (a container, a unit).
    launcher_fd: int | None = None
    load_shedding: LimiterSettings = field(default_factory=LimiterSettings)

    @classmethod
    def from_env(cls, env: Env, *, default_bind: str) -> ServerSettings:
        bind = env.address("BIND", default_bind)
        log_format = env.str("LOG_FORMAT", "auto").lower()
        if log_format not in {"json", "console", "auto"}:
            raise ConfigError(
                f"{env.name('LOG_FORMAT')}: expected json, console or auto, got {log_format!r}"
            )
        log_level = env.str("LOG_LEVEL", "info").lower()
        if log_level not in {"debug", "info", "warning", "error"}:
            raise ConfigError(
                f"{env.name('LOG_LEVEL')}: expected debug, info, warning or error, "
                f"got {log_level!r}"
            )
        return cls(
            bind=bind,
            log_level=log_level,
            log_format=log_format,
            shutdown_grace=env.float("SHUTDOWN_GRACE_SECONDS", 5.0, minimum=0),
            metrics_bind=env.address("METRICS_BIND", "") or None,
            health_bind=env.address("HEALTH_BIND", "") or None,
            tls=tls_from_env(env),
            launcher_fd=_launcher_fd(env),
            load_shedding=LimiterSettings.from_env(env),
        )


def _launcher_fd(env: Env) -> int | None:
    fd = env.int("LAUNCHER_FD", -1, minimum=-1)
    return None if fd < 0 else fd


def tls_from_env(env: Env) -> TlsFiles | None:
    """IDMESH_TLS_CA/CERT/KEY, all three; or None with IDMESH_INSECURE_DEV_MODE=true."""
    names = ("TLS_CA", "TLS_CERT", "TLS_KEY")
    given = {n: env.str(n, "") for n in names}
    insecure = env.bool(INSECURE_SWITCH, False)
    if insecure:
        if any(given.values()):
            raise ConfigError(
                f"{env.name(INSECURE_SWITCH)} and {env.name('TLS_CERT')} are both set: "
                "choose mutual TLS or the plaintext development mode"
            )
        return None
    missing = [env.name(n) for n, v in given.items() if not v]
    if missing:
        raise ConfigError(
            f"{', '.join(missing)}: required for mutual TLS (or set "
            f"{env.name(INSECURE_SWITCH)}=true for plaintext, development only)"
        )
    files = TlsFiles(
        ca=Path(given["TLS_CA"]), cert=Path(given["TLS_CERT"]), key=Path(given["TLS_KEY"])
    )
    for name, path in zip(names, (files.ca, files.cert, files.key), strict=True):
        if not path.is_file():
            raise ConfigError(f"{env.name(name)}: no such file {str(path)!r}")
    try:
        files.check()
    except CredentialsError as exc:
        raise ConfigError(f"{env.name('TLS_CERT')}: {exc}") from None
    return files
