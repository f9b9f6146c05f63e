"""python -m tools.chaos [--seed N] [--rounds N] [--window S] [--load-seconds S]
[--failpoints A,B] [--postgres [--replicas N] [--no-standby] [--[no-]partitions]] [--out DIR]"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from pathlib import Path

from services.common.failpoints import parse
from services.localmesh.netns import Network
from tools.chaos.run import Options, run

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.chaos",
        description="A seeded fault run of the whole mesh, checked against its invariants "
        "(docs/chaos.md).",
    )
    parser.add_argument("--seed", type=int, help="the schedule's seed (default: random, printed)")
    parser.add_argument("--rounds", type=int, default=8, help="rounds to run (default 8)")
    parser.add_argument(
        "--window", type=float, default=12.0, help="verification window, seconds (default 12)"
    )
    parser.add_argument(
        "--load-seconds",
        type=float,
        default=10.0,
        help="how long each round's load starts and faults strike (default 10)",
    )
    parser.add_argument(
        "--failpoints",
        default="",
        help="comma-separated failpoint names (or name=ACTION terms, e.g. "
        "gateway.verify.after_answer=sleep(2000)): arm only these (default: all; docs/chaos.md)",
    )
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="every service on PostgreSQL (a primary and a streaming standby from the embedded "
        "binaries), with the database faults: crash-restart, failover, latency",
    )
    parser.add_argument(
        "--replicas",
        type=int,
        default=2,
        help="with --postgres: replicas of every service (default 2)",
    )
    parser.add_argument(
        "--no-standby",
        action="store_true",
        help="with --postgres: one server, no standby (crash-restarts and latency, no failover)",
    )
    parser.add_argument(
        "--partitions",
        action=argparse.BooleanOptionalAction,
        help="with --postgres: every replica and the database on a host of its own (a network "
        "namespace), and partitions between hosts among the faults (default: on where network "
        "namespaces can be made, that is as root; --partitions fails where they cannot)",
    )
    parser.add_argument(
        "--out", type=Path, help="the run folder (default data/chaos/<time>-seed<seed>)"
    )
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.window <= 0 or args.load_seconds <= 0:
        parser.error("--rounds, --window and --load-seconds must be positive")
    if args.replicas < 1:
        parser.error("--replicas must be at least 1")
    if not args.postgres and ("--replicas" in (argv or sys.argv) or args.no_standby):
        parser.error("--replicas and --no-standby need --postgres")
    if not args.postgres and args.partitions is not None:
        parser.error("--partitions and --no-partitions need --postgres")
    partitions = bool(args.partitions)
    if args.postgres and args.partitions is not False:
        why = Network.available()
        if why is not None and args.partitions:
            print(f"chaos: cannot inject partitions: {why}", file=sys.stderr)
            return 2
        if why is not None:
            print(f"chaos: partitions skipped: {why}")
        partitions = why is None
    failpoints = tuple(sorted({n.strip() for n in args.failpoints.split(",") if n.strip()}))
    try:
        parse(",".join(failpoints))
    except ValueError as exc:
        parser.error(f"--failpoints: {exc}")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**6)
    out = args.out or ROOT / "data" / "chaos" / f"{time.strftime('%Y%m%d-%H%M%S')}-seed{seed}"
    options = Options(
        seed=seed,
        rounds=args.rounds,
        out=out,
        window=args.window,
        load_seconds=args.load_seconds,
        failpoints=failpoints,
        postgres=args.postgres,
        standby=not args.no_standby,
        replicas=args.replicas if args.postgres else 1,
        partitions=partitions,
    )
    return asyncio.run(run(options))


if __name__ == "__main__":
    sys.exit(main())
