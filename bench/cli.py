"""`python -m bench`: seed, start the meshes, run the scenarios, write the results.

    python -m bench                 the default run (`make bench`, about 10 minutes)
    python -m bench --full          100,000 terminations and 10,000,000 imported rows
    python -m bench --smoke         tiny counts, seconds (what tests/test_bench_smoke.py runs)
    python -m bench --only verify,import --profile
    python -m bench --engines sqlite        (no PostgreSQL passes)
    python -m bench --docs-from bench/results/latest.json   (rewrite the docs only)

A run is one pass per engine (--engines, of sqlite, postgresql-x1, postgresql-x2): each seeds
fresh stores, starts its own meshes, runs its scenarios and stops them before the next; a
PostgreSQL pass starts an embedded server of its own (bench.topology.PostgresServer).

Writes bench/results/latest.json (--out), prints the table of targets, and with --docs rewrites
the generated parts of docs/benchmarks.md and docs/capacity.md (bench.report.capacity: the
capacity model over the run's figures), and docs/benchmarks.png.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import shutil
import sys
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import asyncpg

from bench import procs, report, scenarios, seed, topology
from bench.config import ENGINES, PRESETS, SCENARIOS, SQLITE, BenchConfig
from services.localmesh import Mesh, MeshError, MeshSpec
from services.localmesh.postgres import create_databases
from services.messenger_gateway.adapters.schema import MIGRATIONS as GATEWAY_MIGRATIONS
from services.operator_registry.store import MIGRATIONS as REGISTRY_MIGRATIONS

ROOT = Path(__file__).resolve().parents[1]
# The scenario whose result also holds every service's resident memory after each scenario.
MEMORY = "memory"
RESULTS = ROOT / "bench" / "results"
DOCS = ROOT / "docs"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    preset = parser.add_mutually_exclusive_group()
    preset.add_argument(
        "--full",
        action="store_true",
        help="the full counts: 100,000 terminations, 10,000,000 rows (slow)",
    )
    preset.add_argument("--smoke", action="store_true", help="tiny counts, for the test suite")
    parser.add_argument(
        "--only", help=f"comma-separated scenarios to run, of {','.join(SCENARIOS)}"
    )
    parser.add_argument(
        "--engines", help=f"comma-separated passes to run, of {','.join(ENGINES)} (in that order)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "latest.json")
    parser.add_argument("--work-dir", type=Path, default=RESULTS / "work")
    parser.add_argument(
        "--docs",
        action="store_true",
        help="rewrite docs/benchmarks.md, docs/capacity.md and docs/benchmarks.png",
    )
    parser.add_argument("--docs-dir", type=Path, default=DOCS)
    parser.add_argument(
        "--docs-from",
        type=Path,
        metavar="JSON",
        help="only rewrite the docs from a stored result (no run)",
    )
    parser.add_argument("--profile", action="store_true", help="py-spy the services")
    parser.add_argument("--subscribers", type=int)
    parser.add_argument("--terminations", type=int)
    parser.add_argument("--import-rows", type=int)
    parser.add_argument("--pending", type=int, dest="pending_verifications")
    parser.add_argument("--index-users", type=int, help="users in the policy index (memory)")
    parser.add_argument("--index-rules", type=int, help="rules in the policy index (memory)")
    parser.add_argument("--keep-work", action="store_true", help="keep the stores and logs")
    return parser.parse_args(argv)


def build_config(args: argparse.Namespace) -> BenchConfig:
    preset = "full" if args.full else "smoke" if args.smoke else "default"
    config = PRESETS[preset]()
    scenario_names = config.scenarios
    if args.only:
        scenario_names = tuple(s.strip() for s in args.only.split(",") if s.strip())
        unknown = set(scenario_names) - set(SCENARIOS)
        if unknown:
            raise SystemExit(f"unknown scenarios {sorted(unknown)}: choose from {SCENARIOS}")
    engines = config.engines
    if args.engines:
        wanted = {e.strip() for e in args.engines.split(",") if e.strip()}
        if unknown := wanted - set(ENGINES):
            raise SystemExit(f"unknown engines {sorted(unknown)}: choose from {ENGINES}")
        engines = tuple(e for e in ENGINES if e in wanted)
    sizes = {
        "subscribers": args.subscribers,
        "terminations": args.terminations,
        "import_rows": args.import_rows,
        "pending_verifications": args.pending_verifications,
        "index_users": args.index_users,
        "index_rules": args.index_rules,
    }
    given = {k for k, v in sizes.items() if v is not None}
    config = config.with_overrides(
        engines=engines,
        scenarios=scenario_names,
        profile=args.profile or None,
        # a size given on the command line holds on every engine
        postgres_sizes=tuple((k, v) for k, v in config.postgres_sizes if k not in given),
        **sizes,
    )
    if config.fanout_subscribers >= config.subscribers:
        config = config.with_overrides(subscribers=config.fanout_subscribers + 10_000)
    return config


# The scenarios that need the gateways (and so the notifier): without them a pass starts the
# registries only (`--only verify,import`).
GATEWAY_SCENARIOS = frozenset(s.name for s in scenarios.ALL if s.needs_gateways)


def spec_for(config: BenchConfig, server: topology.PostgresServer | None) -> MeshSpec:
    spec = topology.real_spec(
        postgres=server.spec(config.postgres_pool_size) if server is not None else None,
        replicas=config.replicas,
    )
    if GATEWAY_SCENARIOS.isdisjoint(config.scenarios):
        spec = dataclasses.replace(spec, messengers=())
    return spec


async def prepare(
    config: BenchConfig, work_dir: Path, server: topology.PostgresServer | None
) -> tuple[Mesh, topology.EchoMesh, float]:
    """Fresh stores: the seeded registry and the fan-out's identified users in both gateways;
    on SQLite with sqlite3, on PostgreSQL with COPY, each into a database of its own on the
    pass's server (the other databases the services migrate)."""
    mesh = Mesh(spec_for(config, server), work_dir / "mesh")
    echo = topology.EchoMesh(work_dir / "echo", mesh)
    if server is not None:
        conn = await asyncpg.connect(server.url)
        try:
            for statement in topology.POSTGRES_SETTINGS:
                await conn.execute(statement)
        finally:
            await conn.close()
        deployments = {svc.info["deployment"] for svc in mesh.services.values()}
        await create_databases(server.url, sorted(server.database(d) for d in deployments))
    now = seed.utcnow()
    started = time.perf_counter()
    bound = config.fanout_subscribers if "fanout" in config.scenarios else 0
    registry = f"registry-{topology.SEEDED_OPERATOR}"
    plan = seed.RegistrySeed(config.subscribers, topology.MESSENGERS, bound, now)
    if server is None:
        path = topology.db_path(mesh, registry)
        await asyncio.to_thread(seed.seed_registry, path, REGISTRY_MIGRATIONS, plan)
    else:
        await seed.seed_registry_pg(server.database_url(registry), plan)
    for messenger in topology.MESSENGERS if mesh.spec.messengers else ():
        gateway = f"gateway-{messenger}"
        rows = seed.identified_rows(messenger, topology.SEEDED_OPERATOR, bound, now)
        if server is None:
            path = topology.db_path(mesh, gateway)
            await asyncio.to_thread(seed.seed_gateway, path, GATEWAY_MIGRATIONS, rows)
        else:
            await seed.seed_gateway_pg(server.database_url(gateway), rows)
    if "policy" in config.scenarios:  # (SQLite only: not a scenario of the PostgreSQL passes)
        path = topology.db_path(mesh, "gateway-alpha")
        await asyncio.to_thread(seed.seed_policy, path, config.policy_users, now)
    return mesh, echo, time.perf_counter() - started


@dataclasses.dataclass
class Pass:
    """What one engine's pass measured."""

    config: BenchConfig
    seconds: float
    seed_seconds: float
    scenarios: dict[str, Any]
    profiles: dict[str, Any]
    idle_cpu: dict[str, float]  # process -> CPU seconds per second with the mesh idle
    # the stores' sizes before the scenarios ("start") and after each: deployment -> snapshot
    stores: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.as_dict(),
            "seconds": round(self.seconds, 1),
            "seed_seconds": round(self.seed_seconds, 1),
            "idle_cpu": self.idle_cpu,
            "scenarios": self.scenarios,
        }

    def stores_dict(self) -> dict[str, Any]:
        """The pass's store snapshots and what they measured (bench.report.stores)."""
        return report.derive_stores(self.stores, self.scenarios)


async def run_pass(config: BenchConfig, work_dir: Path) -> Pass:
    """One engine's pass: fresh stores, its meshes, its scenarios; every process (and the
    PostgreSQL server) stopped at the end."""
    began = time.perf_counter()
    label = config.engine if config.engine == SQLITE else f"{config.engine} (PostgreSQL)"
    print(f"bench: {label}, scenarios {', '.join(config.scenarios)}", flush=True)
    await asyncio.to_thread(shutil.rmtree, work_dir, ignore_errors=True)
    results: dict[str, Any] = {}
    rss: dict[str, dict[str, float]] = {}
    stores: dict[str, dict[str, Any]] = {}
    ctx: scenarios.Context | None = None
    seed_seconds = 0.0
    idle_cpu: dict[str, float] = {}
    if any(s.run is not None and s.name in config.scenarios for s in scenarios.ALL):
        ctx, seed_seconds, idle_cpu = await _run_in_meshes(config, work_dir, results, rss, stores)
    else:  # only scenarios with meshes of their own (`--only replication`): no pass meshes
        results |= {s.name: {"status": "skipped"} for s in scenarios.ALL if s.run is not None}
    for scenario in scenarios.ALL:
        if scenario.run_alone is None:
            continue
        if scenario.name in config.scenarios:
            run_alone = scenario.run_alone(config, work_dir)
            results[scenario.name] = await _attempt(scenario.name, run_alone)
        else:
            results[scenario.name] = {"status": "skipped"}
    results[MEMORY]["rss_after_scenario_mb"] = rss
    profiles = {}
    if ctx is not None:
        for profile_label, profiler in ctx.profiles.items():
            profiles[profile_label] = profiler.summaries()
    return Pass(
        config, time.perf_counter() - began, seed_seconds, results, profiles, idle_cpu, stores
    )


async def _run_in_meshes(
    config: BenchConfig,
    work_dir: Path,
    results: dict[str, Any],
    rss: dict[str, dict[str, float]],
    stores: dict[str, dict[str, Any]],
) -> tuple[scenarios.Context | None, float, dict[str, float]]:
    """The pass's server and meshes, started for the scenarios that run in them, and stopped;
    their results into results, every service's memory after each into rss, the stores'
    snapshots (bench.report.stores) at the start and after each into stores. Returns the
    scenarios' context (its profiles), the seeding's seconds and the idle mesh's CPU."""
    server: topology.PostgresServer | None = None
    ctx: scenarios.Context | None = None
    started: list[Mesh | topology.EchoMesh] = []  # stopped at the end, the last first
    seed_seconds = 0.0
    idle_cpu: dict[str, float] = {}
    try:
        if config.engine != SQLITE:
            server = await asyncio.to_thread(topology.PostgresServer, work_dir / "postgres")
        mesh, echo, seed_seconds = await prepare(config, work_dir, server)
        print(f"  seeded {config.subscribers:,} subscribers in {seed_seconds:.1f}s", flush=True)
        started += [mesh, echo]
        echo.launch(mesh)
        await asyncio.to_thread(mesh.start, 120.0)
        await asyncio.to_thread(echo.wait, 60.0)
        ctx = scenarios.Context(config, mesh, echo, work_dir, RESULTS / "profiles", postgres=server)
        rss["start"] = procs.rss_all(ctx.mesh_pids())
        # the bytes of each table once, over the seeded stores; the rows after every scenario
        stores["start"] = await scenarios.snapshot_all(ctx, table_bytes=True)
        idle_cpu = await scenarios.idle_cpu(ctx)
        for scenario in scenarios.ALL:
            if scenario.run is None:  # (it runs alone, below)
                continue
            if scenario.name not in config.scenarios:
                results[scenario.name] = {"status": "skipped"}
                continue
            results[scenario.name] = await _attempt(scenario.name, scenario.run(ctx))
            rss[scenario.name] = procs.rss_all(ctx.mesh_pids())
            stores[scenario.name] = await scenarios.snapshot_all(ctx, table_bytes=False)
    except MeshError as exc:
        print(f"  {config.engine}: the mesh did not start: {exc}", flush=True)
        for scenario in scenarios.ALL:
            if scenario.run is not None:
                status = "failed" if scenario.name in config.scenarios else "skipped"
                reason = f"the mesh did not start: {exc}"
                results.setdefault(scenario.name, {"status": status, "reason": reason})
    finally:
        if ctx is not None:
            await ctx.close()
        for meshes in reversed(started):
            await asyncio.to_thread(meshes.stop)
        if server is not None:
            await asyncio.to_thread(server.stop)
    return ctx, seed_seconds, idle_cpu


async def _attempt(name: str, run: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    """A scenario's result; a scenario that failed (scenarios.BenchFailure), a result saying
    so and why."""
    try:
        return await run
    except scenarios.BenchFailure as exc:
        print(f"  {name}: FAILED: {exc}", flush=True)
        return {"status": "failed", "reason": str(exc)}


async def run(config: BenchConfig, work_dir: Path) -> dict[str, Any]:
    began = time.time()
    print(f"bench: preset {config.preset}, engines {', '.join(config.engines)}", flush=True)
    passes = {}
    for engine in config.engines:
        pass_config = config.for_engine(engine)
        if pass_config.scenarios:  # (`--only memory`: nothing for PostgreSQL to run)
            passes[engine] = await run_pass(pass_config, work_dir / engine)
    sqlite = passes.get(SQLITE)
    return report.build(
        config=config,
        machine=topology.describe_machine(),
        started_at=began,
        seconds=time.time() - began,
        seed_seconds=sqlite.seed_seconds if sqlite is not None else 0.0,
        idle_cpu={e: run.idle_cpu for e, run in passes.items()},
        stores={e: run.stores_dict() for e, run in passes.items()},
        scenarios=(
            sqlite.scenarios
            if sqlite is not None
            else {name: {"status": "skipped"} for name in SCENARIOS}
        ),
        profiles={label: p for run in passes.values() for label, p in run.profiles.items()},
        postgresql={e: run.as_dict() for e, run in passes.items() if e != SQLITE},
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.docs_from is not None:
        result = report.read_json(args.docs_from)
        print(report.text_table(result))
        md, png = report.write_docs(result, args.docs_dir)
        capacity = report.write_capacity(result, args.docs_dir)
        print(f"docs: {md} {png} {capacity}")
        return 0
    config = build_config(args)
    result = asyncio.run(run(config, args.work_dir.resolve()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report.write_json(result, args.out)
    print()
    print(report.text_table(result))
    print(f"\nresults: {args.out}")
    if args.docs:
        md, png = report.write_docs(result, args.docs_dir)
        capacity = report.write_capacity(result, args.docs_dir)
        print(f"docs: {md} {png} {capacity}")
    if not args.keep_work:
        shutil.rmtree(args.work_dir, ignore_errors=True)
    failed = report.failed(result)
    if failed:
        print(f"failed scenarios: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
