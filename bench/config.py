"""The sizes of a bench run. Three presets: `smoke` (the test suite: seconds), `default`
(`make bench`: about 10 minutes on a 2-core machine) and `full` (--full: the full
counts, 100,000 terminations and 10,000,000 imported rows; well over 10 minutes).

A run is one pass per engine: SQLite (every scenario but those of POSTGRES_ONCE), then
PostgreSQL with one replica and with two replicas of every service over one embedded server (the
scenarios of POSTGRES_SCENARIOS, at the preset's `postgres_sizes`: smaller, to keep the run
inside its budget; and, in the first PostgreSQL pass only, those of POSTGRES_ONCE, which start
servers of their own). `BenchConfig.for_engine` gives a pass its config."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

SCENARIOS: tuple[str, ...] = (
    "identification",
    "verify",
    "fanout",
    "import",
    "memory",
    "policy",
    "replication",
)

# The engines a run can pass over: SQLite, and PostgreSQL with 1 or 2 replicas of every service.
SQLITE = "sqlite"
ENGINES: tuple[str, ...] = (SQLITE, "postgresql-x1", "postgresql-x2")
# On PostgreSQL: the scenarios whose figures depend on the store. The pending-verifications
# memory and the delivery policy's decisions are the gateway's own memory on either engine.
POSTGRES_SCENARIOS: tuple[str, ...] = ("identification", "verify", "fanout", "import")
# PostgreSQL scenarios with servers of their own (not the pass's): they run once, in the run's
# first PostgreSQL pass.
POSTGRES_ONCE: tuple[str, ...] = ("replication",)
# What a SQLite pass runs of the run's scenarios.
SQLITE_SCENARIOS: tuple[str, ...] = tuple(s for s in SCENARIOS if s not in POSTGRES_ONCE)


def engine_replicas(engine: str) -> int:
    """ "postgresql-x2" -> 2; SQLite: 1."""
    return int(engine.rpartition("-x")[2]) if engine != SQLITE else 1


def engine_label(engine: str) -> str:
    """For tables: "SQLite", "PostgreSQL x1", "PostgreSQL x2"."""
    if engine == SQLITE:
        return "SQLite"
    return f"PostgreSQL x{engine_replicas(engine)}"


@dataclass(frozen=True, slots=True)
class BenchConfig:
    preset: str
    # the registry under test holds this many subscribers (seeded with sqlite3 before it starts)
    subscribers: int = 1_000_000
    # 1. identification: closed-loop concurrency levels, measured seconds per level
    identification_levels: tuple[int, ...] = (1, 16, 64)
    identification_seconds: float = 6.0
    # 2. VerifySubscriber straight at the registry
    verify_levels: tuple[int, ...] = (1, 16, 64)
    verify_seconds: float = 5.0
    warmup_seconds: float = 1.0
    # before the scenarios: the mesh idle this long, its CPU per second (the background polls)
    idle_seconds: float = 3.0
    # 3. termination fan-out: a burst of `terminations` (each bound to two messengers), then an
    # overload: an open loop at `steady_overload` times the capacity the burst measured (at
    # most `steady_rate_cap` terminations/s, which sizes the seeding) for `steady_seconds`
    terminations: int = 20_000
    termination_concurrency: int = 64
    steady_overload: float = 3.0
    steady_rate_cap: float = 3000.0
    steady_seconds: float = 10.0
    # then `bulk_terminations` through TerminateContracts (the billing system's stream) in
    # batches of `bulk_batch`
    bulk_terminations: int = 20_000
    bulk_batch: int = 1_000
    drain_timeout_seconds: float = 180.0
    # 4. bulk import through ImportSubscribers, against sqlite3 executemany of the same rows
    import_rows: int = 1_000_000
    import_batch: int = 10_000
    # 5. a gateway holding this many pending verifications (its operator never answers)
    pending_verifications: int = 10_000
    pending_settle_seconds: float = 8.0
    # ... and the delivery policy's index alone: `index_users` users with `index_rules` rules
    # between them, seeded into a gateway store and loaded in a process of its own
    index_users: int = 1_000_000
    index_rules: int = 3_000_000
    # 6. delivery policy: gateway-alpha holds `policy_users` identified users and their
    # preferences (seeded with sqlite3); single CheckDelivery at `policy_levels` against the
    # echo gateway, then CheckDeliveryBatch of `policy_batch` pairs at `policy_batch_concurrency`
    policy_users: int = 1_000_000
    policy_levels: tuple[int, ...] = (1, 16)
    policy_seconds: float = 5.0
    policy_batch: int = 1_000
    policy_batch_concurrency: int = 2
    policy_batch_seconds: float = 8.0
    # 7. synchronous replication's cost, on PostgreSQL servers of its own: slices of
    # identifications, then TerminateContract calls, each a closed loop at
    # `replication_concurrency` for `replication_seconds`, with the primary alone and with a
    # synchronous standby taking turns (four slices each); over `replication_subscribers` (half
    # of them bound to a messenger: the terminations')
    replication_concurrency: int = 16
    replication_seconds: float = 2.0
    replication_subscribers: int = 120_000
    scenarios: tuple[str, ...] = SCENARIOS
    # the passes of the run, of ENGINES, in this order; and this pass's engine
    engines: tuple[str, ...] = ENGINES
    engine: str = SQLITE
    # a PostgreSQL pass's sizes (BenchConfig field -> value), instead of the ones above
    postgres_sizes: tuple[tuple[str, Any], ...] = ()
    # connections per service replica on PostgreSQL (IDMESH_DB_POOL_SIZE): two replicas of
    # the bench's five services at 6 each stay well inside the server's 100 connections
    postgres_pool_size: int = 6
    # run py-spy against the services during each scenario (bench/results/profiles/)
    profile: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def fanout_subscribers(self) -> int:
        """Subscribers seeded with bindings to both messengers: the burst, the overload run at
        its most and the bulk stream."""
        return self.terminations + self.steady_terminations + self.bulk_terminations

    @property
    def steady_terminations(self) -> int:
        """At most this many terminations in the overload phase (seeded beforehand)."""
        return int(self.steady_rate_cap * self.steady_seconds)

    @property
    def replicas(self) -> int:
        return engine_replicas(self.engine)

    def with_overrides(self, **changes: Any) -> BenchConfig:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def for_engine(self, engine: str) -> BenchConfig:
        """This run's config for one pass: on PostgreSQL, its sizes and scenarios."""
        if engine == SQLITE:
            return replace(
                self,
                engine=engine,
                scenarios=tuple(s for s in self.scenarios if s not in POSTGRES_ONCE),
            )
        first = next((e for e in self.engines if e != SQLITE), engine)
        config = replace(
            self,
            engine=engine,
            scenarios=tuple(
                s
                for s in self.scenarios
                if s in POSTGRES_SCENARIOS or (s in POSTGRES_ONCE and engine == first)
            ),
            **dict(self.postgres_sizes),
        )
        if config.fanout_subscribers >= config.subscribers:
            config = replace(config, subscribers=config.fanout_subscribers + 10_000)
        return config

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


# A PostgreSQL pass of `make bench` (two of them: about three minutes together on a quiet
# 2-core machine): the store-bound figures at smaller sizes.
POSTGRES_DEFAULT: tuple[tuple[str, Any], ...] = (
    ("subscribers", 50_000),
    ("identification_levels", (16,)),
    ("identification_seconds", 4.0),
    ("verify_levels", (16, 64)),
    ("verify_seconds", 3.0),
    ("terminations", 1_000),
    ("steady_rate_cap", 1_000.0),
    ("steady_seconds", 3.0),
    ("bulk_terminations", 3_000),
    ("import_rows", 50_000),
)


def default() -> BenchConfig:
    return BenchConfig(
        preset="default",
        postgres_sizes=POSTGRES_DEFAULT,
        notes=(
            "fan-out uses 20,000 terminations (40,000 events) to stay inside the 10-minute "
            "budget; --full runs 100,000",
            "on PostgreSQL (x1: one replica of every service, x2: two, over one embedded "
            "server) smaller sizes, to keep the run inside its budget: 50,000 subscribers, "
            "identification at 16 clients for 4 s, VerifySubscriber at 16 and 64 for 3 s, a "
            "fan-out burst of 1,000 terminations, 3 s of overload (at most 1,000/s) and 3,000 "
            "through TerminateContracts, 50,000 imported rows; the memory and delivery-policy "
            "scenarios run on SQLite only (the gateway's own memory on either engine)",
            "the synchronous standby's cost runs once, in the first PostgreSQL pass, on a "
            "durable primary and standby of its own (16 clients, slices of 2 s per operation, "
            "four slices per setup)",
        ),
    )


def full() -> BenchConfig:
    return BenchConfig(
        preset="full",
        terminations=100_000,
        bulk_terminations=100_000,
        import_rows=10_000_000,
        index_users=10_000_000,
        index_rules=30_000_000,
    )


def smoke() -> BenchConfig:
    """Tiny counts: exercises every scenario and the report in seconds (tests/)."""
    return BenchConfig(
        preset="smoke",
        subscribers=2_000,
        identification_levels=(2,),
        identification_seconds=1.5,  # long enough for one identification on a loaded machine
        verify_levels=(4,),
        verify_seconds=1.0,
        warmup_seconds=0.1,
        idle_seconds=0.3,
        terminations=20,
        termination_concurrency=4,
        steady_rate_cap=40.0,
        steady_seconds=0.5,
        bulk_terminations=30,
        bulk_batch=8,
        drain_timeout_seconds=30.0,
        import_rows=500,
        import_batch=200,
        pending_verifications=20,
        pending_settle_seconds=0.2,
        index_users=2_000,
        index_rules=6_000,
        policy_users=2_000,
        policy_levels=(2,),
        policy_seconds=0.3,
        policy_batch=100,
        policy_batch_seconds=0.3,
        replication_concurrency=2,
        replication_seconds=0.5,
        replication_subscribers=10_000,
        # the PostgreSQL path once, with two replicas (the replica paths), tiny
        engines=(SQLITE, "postgresql-x2"),
        postgres_sizes=(("terminations", 10), ("bulk_terminations", 16), ("import_rows", 300)),
    )


PRESETS = {"default": default, "full": full, "smoke": smoke}
