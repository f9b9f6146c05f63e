"""`python -m bench.overload`: one registry under an open loop of TerminateContract above its
capacity, each outcome counted by status code (the small reproduction of the bench's overload
phase, without the gateways).

It seeds a registry (and starts the notifier its outbox relay publishes to), measures the
registry's capacity with a closed loop, then sends an open loop at `--overload` times that for
`--seconds` seconds with a generous deadline, and reports per status code how many calls ended
so and how long they took, next to the server's own count of what reached its interceptor
(`idmesh_rpc_requests`, from /metrics). A call the client saw fail that the server never
counted never reached a handler.

    .venv/bin/python -m bench.overload [--overload 3] [--seconds 8]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import shutil
import sys
import time
import urllib.request
from dataclasses import asdict
from pathlib import Path
from typing import Any

import grpc
from idmesh.registry.v1 import registry_pb2, registry_pb2_grpc

from bench import procs, seed, topology
from bench.load import Latencies, open_loop, run_count
from services.common.channels import open_channel, sent_at
from services.common.context import SENT_AT_METADATA_KEY
from services.common.identity import Caller, Kind, Role
from services.common.status import error_details
from services.localmesh import Mesh, MeshSpec, OperatorSpec
from services.operator_registry.store import MIGRATIONS as REGISTRY_MIGRATIONS

METHOD = "/idmesh.registry.v1.RegistryAdminService/TerminateContract"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.overload", description=__doc__)
    parser.add_argument("--overload", type=float, default=3.0, help="times the capacity")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of the open loop")
    parser.add_argument("--capacity-calls", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=64, help="of the capacity run")
    parser.add_argument("--timeout", type=float, default=10.0, help="each call's deadline")
    parser.add_argument("--rate", type=float, default=None, help="a fixed rate instead")
    parser.add_argument("--work-dir", type=Path, default=Path("bench/results/overload-work"))
    parser.add_argument("--bare-client", action="store_true", help="a bare grpc.aio channel")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    parser.add_argument("--profile", type=Path, default=None, help="py-spy output folder")
    parser.add_argument(
        "--env", action="append", default=[], help="NAME=VALUE for the registry (repeatable)"
    )
    return parser.parse_args(argv)


def server_counts(metrics_address: str) -> dict[str, float]:
    """The registry's own figures for TerminateContract: calls by status code (as counted by its
    interceptor), `handled_le_<seconds>` (calls by handling time, cumulative), and the
    queue delay it last estimated in front of the interceptor."""
    with urllib.request.urlopen(f"http://{metrics_address}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    counts: dict[str, float] = collections.defaultdict(float)
    for line in text.splitlines():
        value = line.rsplit(" ", 1)[-1]
        if line.startswith("idmesh_rpc_requests_total{") and f'method="{METHOD}"' in line:
            counts[line.split('code="', 1)[1].split('"', 1)[0]] += float(value)
        elif line.startswith("idmesh_rpc_latency_seconds_bucket{") and METHOD in line:
            counts["handled_le_" + line.split('le="', 1)[1].split('"', 1)[0]] += float(value)
        elif line.startswith("idmesh_rpc_queue_delay_seconds "):
            counts["queue_delay_seconds"] = float(value)
    return dict(counts)


def handled_within(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Of the calls handled between two readings (accepted and refused alike), the share
    handled within each bucket's bound (seconds; from the interceptor's entry to its end)."""
    buckets = {
        key[len("handled_le_") :]: after[key] - before.get(key, 0.0)
        for key in after
        if key.startswith("handled_le_")
    }
    total = buckets.get("+Inf", 0.0)
    if not total:
        return {}
    return {le: round(n / total, 3) for le, n in buckets.items() if le != "+Inf"}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    work = args.work_dir.resolve()
    if work.exists():
        shutil.rmtree(work)
    extra = dict(item.split("=", 1) for item in args.env)
    spec = MeshSpec(
        operators=(OperatorSpec(topology.SEEDED_OPERATOR, "Beeline"),),
        messengers=(),
        common_env={**topology.UNLIMITED_ENV, **extra},
        log_format="json",
    )
    mesh = Mesh(spec, work / "mesh")
    registry = f"registry-{topology.SEEDED_OPERATOR}"
    rate_cap = args.rate or 3000.0
    subscribers = args.capacity_calls + int(rate_cap * args.seconds) + 10
    seed.seed_registry(
        topology.db_path(mesh, registry),
        REGISTRY_MIGRATIONS,
        seed.RegistrySeed(subscribers, topology.MESSENGERS, subscribers, seed.utcnow()),
    )
    await asyncio.to_thread(mesh.start, 120.0)
    admin_id = Caller(Kind.OPERATOR, topology.SEEDED_OPERATOR, Role.ADMIN)
    tls = mesh.credentials(admin_id)
    if args.bare_client:  # no client interceptors: a cheaper client, the same transport
        assert tls is not None
        channel = grpc.aio.secure_channel(mesh.address(registry), tls.channel_credentials())
    else:
        channel = open_channel(mesh.address(registry), identity=admin_id, tls=tls)
    admin = registry_pb2_grpc.RegistryAdminServiceStub(channel)
    try:

        async def terminate(i: int) -> None:
            await admin.TerminateContract(
                registry_pb2.TerminateContractRequest(phone_number=seed.beeline_number(i)),
                timeout=args.timeout,
                metadata=((SENT_AT_METADATA_KEY, sent_at()),) if args.bare_client else None,
            )

        _start, capacity_run = await run_count(
            terminate, count=args.capacity_calls, concurrency=args.concurrency
        )
        capacity = capacity_run.throughput
        rate = args.rate or args.overload * capacity
        before = server_counts(mesh.metrics_address(registry))
        outcomes: dict[str, list[float]] = collections.defaultdict(list)
        samples: dict[str, str] = {}
        retry_delays: list[float] = []

        async def one(i: int) -> None:
            began = time.perf_counter()
            try:
                await terminate(i)
                code = "OK"
            except grpc.aio.AioRpcError as exc:
                code = exc.code().name
                samples.setdefault(code, f"{exc.details()!r} / {exc.debug_error_string()!r}")
                delay = error_details(exc).retry_delay
                if delay is not None:
                    retry_delays.append(delay.total_seconds())
            outcomes[code].append(time.perf_counter() - began)

        count = int(rate * args.seconds)
        pids = topology.pids(mesh.services)
        profiler = (
            procs.Profiler(args.profile, "overload", pids)
            if args.profile is not None
            else contextlib.nullcontext()
        )
        everyone = {**pids, "client": os.getpid()}
        with profiler:
            # CPU is measured over the sending window only (not the drain after it)
            mark = procs.cpu_mark(everyone)
            sending = asyncio.create_task(
                open_loop(
                    one,
                    rate=rate,
                    count=count,
                    first_index=args.capacity_calls,
                    grace=args.timeout * 3,
                )
            )
            await asyncio.sleep(args.seconds)
            cpu = procs.cpu_since(mark, everyone)
            run_result = await sending
        after = server_counts(mesh.metrics_address(registry))
    finally:
        await channel.close()
        await asyncio.to_thread(mesh.stop)
    server = {
        code: after.get(code, 0) - before.get(code, 0)
        for code in after
        if not code.startswith("handled_le_") and code != "queue_delay_seconds"
    }
    return {
        "capacity_calls_per_second": round(capacity, 1),
        "capacity_p99_ms": round(capacity_run.latency.p99_ms, 1),
        "capacity_run_refused": before.get("RESOURCE_EXHAUSTED", 0),
        "rate": round(rate, 1),
        "calls": count,
        "generator_lag_max_ms": round(run_result.lag_max_ms, 1),
        "cpu_share": {name: round(seconds / args.seconds, 2) for name, seconds in cpu.items()},
        "client": {
            code: {
                "count": len(times),
                **{
                    k: round(v, 1)
                    for k, v in asdict(Latencies.of(times)).items()
                    if k in ("p50_ms", "p99_ms", "max_ms")
                },
            }
            for code, times in sorted(outcomes.items())
        },
        "retry_delay_ms": Latencies.of(retry_delays).p50_ms if retry_delays else None,
        "server_counted": {k: v for k, v in sorted(server.items()) if v},
        "server_handled_within_seconds": handled_within(before, after),
        "server_queue_delay_ms_at_end": round(after.get("queue_delay_seconds", 0.0) * 1000, 1),
        "samples": samples,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = asyncio.run(run(args))
    print(json.dumps(result, indent=2))
    if not args.keep:
        shutil.rmtree(args.work_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
