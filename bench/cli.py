"""`python -m bench`: seed, start the meshes, run the scenarios, write the results.

    python -m bench                 the default run (`make bench`, under 10 minutes)
    python -m bench --full          100,000 terminations and 10,000,000 imported rows
    python -m bench --smoke         tiny counts, seconds (what tests/test_bench_smoke.py runs)
    python -m bench --only verify,import --profile
    python -m bench --docs-from bench/results/latest.json   (rewrite the docs only)

Writes bench/results/latest.json (--out), prints the table of targets, and with --docs rewrites
the generated part of docs/benchmarks.md and docs/benchmarks.png.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from bench import procs, report, scenarios, seed, topology
from bench.config import PRESETS, SCENARIOS, BenchConfig
from services.cli.mesh import Mesh
from services.messenger_gateway.store import MIGRATIONS as GATEWAY_MIGRATIONS
from services.operator_registry.store import MIGRATIONS as REGISTRY_MIGRATIONS

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DOCS = ROOT / "docs"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    preset = parser.add_mutually_exclusive_group()
    preset.add_argument("--full", action="store_true", help="the issue's full counts (slow)")
    preset.add_argument("--smoke", action="store_true", help="tiny counts, for the test suite")
    parser.add_argument(
        "--only", help=f"comma-separated scenarios to run, of {','.join(SCENARIOS)}"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "latest.json")
    parser.add_argument("--work-dir", type=Path, default=RESULTS / "work")
    parser.add_argument(
        "--docs", action="store_true", help="rewrite docs/benchmarks.md and docs/benchmarks.png"
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
    config = config.with_overrides(
        subscribers=args.subscribers,
        terminations=args.terminations,
        import_rows=args.import_rows,
        pending_verifications=args.pending_verifications,
        scenarios=scenario_names,
        profile=args.profile or None,
    )
    if config.fanout_subscribers >= config.subscribers:
        config = config.with_overrides(subscribers=config.fanout_subscribers + 10_000)
    return config


def prepare(config: BenchConfig, work_dir: Path) -> tuple[Mesh, topology.EchoMesh, float]:
    """Fresh stores: the seeded registry and the fan-out's identified users in both gateways."""
    if work_dir.exists():
        shutil.rmtree(work_dir)
    mesh = Mesh(topology.real_spec(), work_dir / "mesh")
    echo = topology.EchoMesh(work_dir / "echo", mesh)
    now = seed.utcnow()
    started = time.perf_counter()
    bound = config.fanout_subscribers if "fanout" in config.scenarios else 0
    seed.seed_registry(
        topology.db_path(mesh, f"registry-{topology.SEEDED_OPERATOR}"),
        REGISTRY_MIGRATIONS,
        subscribers=config.subscribers,
        messengers=topology.MESSENGERS,
        bound=bound,
        now=now,
    )
    for messenger in topology.MESSENGERS:
        seed.seed_gateway(
            topology.db_path(mesh, f"gateway-{messenger}"),
            GATEWAY_MIGRATIONS,
            seed.identified_rows(messenger, topology.SEEDED_OPERATOR, bound, now),
        )
    if "policy" in config.scenarios:
        seed.seed_policy(topology.db_path(mesh, "gateway-alpha"), config.policy_users, now)
    return mesh, echo, time.perf_counter() - started


async def run(config: BenchConfig, work_dir: Path) -> dict[str, Any]:
    began = time.time()
    print(f"bench: preset {config.preset}, scenarios {', '.join(config.scenarios)}", flush=True)
    mesh, echo, seed_seconds = await asyncio.to_thread(prepare, config, work_dir)
    print(f"  seeded {config.subscribers:,} subscribers in {seed_seconds:.1f}s", flush=True)
    results: dict[str, Any] = {}
    rss: dict[str, dict[str, float]] = {}
    ctx: scenarios.Context | None = None
    echo.launch(mesh)
    try:
        await asyncio.to_thread(mesh.start, 120.0)
        await asyncio.to_thread(echo.wait, 60.0)
        ctx = scenarios.Context(config, mesh, echo, work_dir, RESULTS / "profiles")
        rss["start"] = procs.rss_all(ctx.mesh_pids())
        steps = {
            "identification": scenarios.identification,
            "verify": scenarios.verify,
            "fanout": scenarios.fanout,
            "import": scenarios.bulk_import,
            "policy": scenarios.policy,
        }
        for name, step in steps.items():
            if name not in config.scenarios:
                results[name] = {"status": "skipped"}
                continue
            try:
                results[name] = await step(ctx)
            except scenarios.BenchFailure as exc:
                print(f"  {name}: FAILED: {exc}", flush=True)
                results[name] = {"status": "failed", "reason": str(exc)}
            rss[name] = procs.rss_all(ctx.mesh_pids())
    finally:
        if ctx is not None:
            await ctx.close()
        await asyncio.to_thread(echo.stop)
        await asyncio.to_thread(mesh.stop)
    if "memory" in config.scenarios:
        try:
            results["memory"] = await scenarios.pending_memory(config, work_dir)
        except scenarios.BenchFailure as exc:
            print(f"  memory: FAILED: {exc}", flush=True)
            results["memory"] = {"status": "failed", "reason": str(exc)}
    else:
        results["memory"] = {"status": "skipped"}
    results["memory"]["rss_after_scenario_mb"] = rss
    profiles = {}
    if ctx is not None:
        for label, profiler in ctx.profiles.items():
            profiles[label] = profiler.summaries()
    return report.build(
        config=config,
        machine=topology.describe_machine(),
        started_at=began,
        seconds=time.time() - began,
        seed_seconds=seed_seconds,
        scenarios=results,
        profiles=profiles,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.docs_from is not None:
        result = report.read_json(args.docs_from)
        print(report.text_table(result))
        md, png = report.write_docs(result, args.docs_dir)
        print(f"docs: {md} {png}")
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
        print(f"docs: {md} {png}")
    if not args.keep_work:
        shutil.rmtree(args.work_dir, ignore_errors=True)
    failed = [n for n, s in result["scenarios"].items() if s.get("status") == "failed"]
    if failed:
        print(f"failed scenarios: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
