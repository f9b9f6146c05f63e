"""The local mesh and its services' health: `idmesh up` (run the demo mesh), `idmesh status`
(every service's health), `idmesh health SERVICE`, `idmesh metrics SERVICE`."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import urllib.request
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from services.cli import mesh as meshlib
from services.cli.command import Subparsers, bounded_int
from services.cli.connection import CliError, data_dir, layout, open_to, service_info
from services.common.identity import Caller, Kind, parse_identity
from services.localmesh.mesh import MESH_FILE
from services.localmesh.spec import BASE_PORT_RANGE, PostgresSpec


def cmd_up(args: argparse.Namespace) -> int:
    """A plain function: the launcher supervises processes in the main thread (signals)."""
    postgres = None
    if args.postgres:
        server = os.environ.get("IDMESH_DATABASE_URL", "").strip() or None
        if args.standby and server is not None:
            print(
                "error: --standby starts a primary and its standby of its own; unset "
                "IDMESH_DATABASE_URL (a server of yours gets its standby from your tooling)",
                file=sys.stderr,
            )
            return 2
        postgres = PostgresSpec(url=server, standby=args.standby)
    elif args.replicas > 1 or args.standby:
        option = "--standby" if args.standby else "--replicas"
        print(f"error: {option} needs --postgres (SQLite: one process per store)", file=sys.stderr)
        return 2
    return meshlib.run_up(
        data_dir(args),
        as_json=args.json,
        base_port=args.base_port,
        postgres=postgres,
        replicas=args.replicas,
    )


# The folders of `make up` and `make up-pg`: what `idmesh down` stops when given no folder.
DEFAULT_DATA_DIRS = (Path("data"), Path("data-pg"))


def cmd_down(args: argparse.Namespace) -> int:
    """Stop the mesh of --data-dir (or IDMESH_DATA_DIR); given neither, every mesh running in
    ./data and ./data-pg (`make up`'s and `make up-pg`'s), so that one command stops either."""
    if args.data_dir or os.environ.get("IDMESH_DATA_DIR"):
        return meshlib.run_down(data_dir(args), timeout=args.timeout)
    found = [d for d in DEFAULT_DATA_DIRS if (d / MESH_FILE).exists()]
    if not found:
        names = " or ".join(f"{d}/{MESH_FILE}" for d in DEFAULT_DATA_DIRS)
        print(f"no mesh found ({names}): nothing to stop", file=sys.stderr)
        return 0
    codes = [meshlib.run_down(d, timeout=args.timeout) for d in found]
    return max(codes)


def cmd_failover(args: argparse.Namespace) -> int:
    """A plain function: it runs the PostgreSQL binaries and waits for them."""
    folder = args.data_dir or os.environ.get("IDMESH_DATA_DIR") or "data-pg"
    return meshlib.run_failover(Path(folder))


async def cmd_status(args: argparse.Namespace) -> int:
    rows = []
    for name, info in layout(args).items():
        identity = parse_identity(info["identity"])
        async with open_to(args, info["address"], identity) as channel:
            try:
                reply = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=2.0
                )
                status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.aio.AioRpcError as exc:
                status = f"DOWN ({exc.code().name})"
        rows.append(
            {
                "service": name,
                "kind": info["kind"],
                "address": info["address"],
                "health": status,
                "metrics": info.get("metrics") or "-",
            }
        )
    if args.json:
        print(json.dumps(rows))
    else:
        headers = ["service", "kind", "address", "health", "metrics"]
        widths = [max(len(h), *(len(r[h]) for r in rows)) for h in headers]
        print("  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
        for r in rows:
            print("  ".join(r[h].ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    return 0 if all(r["health"] == "SERVING" for r in rows) else 1


async def cmd_health(args: argparse.Namespace) -> int:
    """gRPC health of one service (a mesh service name, or --address): exit 0 when SERVING."""
    if args.address:
        address = str(args.address)
        identity = Caller(Kind.NOTIFIER, "notifier")  # only used to pick mesh credentials
    else:
        if not args.service:
            raise CliError("name a service of the mesh (see idmesh status), or give --address")
        info = service_info(args, args.service)
        address, identity = str(info["address"]), parse_identity(info["identity"])
    async with open_to(args, address, identity) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=args.grpc_service), timeout=args.timeout
        )
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    if args.json:
        print(json.dumps({"address": address, "health": status}))
    else:
        print(f"{address}: {status}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


async def cmd_metrics(args: argparse.Namespace) -> int:
    """The Prometheus metrics of a service: idmesh_* samples (all with --all)."""
    if args.url:
        url = str(args.url)
    else:
        info = service_info(args, args.service or "")
        if not info.get("metrics"):
            raise CliError(f"{args.service} has no metrics address in the mesh file")
        url = f"http://{info['metrics']}/metrics"
    try:
        text = await asyncio.to_thread(_fetch, url)
    except OSError as exc:
        raise CliError(f"cannot read {url}: {exc}") from None
    samples = [
        (s.name, s.labels, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if (args.all or s.name.startswith("idmesh_")) and (not args.grep or args.grep in s.name)
    ]
    if args.json:
        print(json.dumps([{"name": n, "labels": lb, "value": v} for n, lb, v in samples]))
    else:
        for name, labels, value in samples:
            shown = ",".join(f'{k}="{v}"' for k, v in labels.items())
            number = int(value) if float(value).is_integer() else value
            print(f"{name}{{{shown}}} {number}" if shown else f"{name} {number}")
    return 0


def _fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode("utf-8"))


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("up", help="run the local mesh until Ctrl-C, SIGTERM or `idmesh down`")
    p.add_argument(
        "--data-dir", help="the mesh's data folder (env IDMESH_DATA_DIR, default ./data)"
    )
    p.add_argument(
        "--base-port",
        type=bounded_int(BASE_PORT_RANGE.start, BASE_PORT_RANGE.stop - 1),
        help="gRPC on N+1, N+2 (registries), N+10 (notifier), N+21, N+22 (gateways), metrics "
        "on N+91..N+95 (default: 50051.. and 9101..9105); meshes 100 apart run side by side",
    )
    p.add_argument(
        "--postgres",
        action="store_true",
        help="every service on PostgreSQL: the server of IDMESH_DATABASE_URL (its user may "
        "CREATE DATABASE), else an embedded one under <data-dir>/postgres; a database each",
    )
    p.add_argument(
        "--replicas",
        type=bounded_int(1, 4),
        default=1,
        help="replicas of every service (with --postgres; default 1)",
    )
    p.add_argument(
        "--standby",
        action="store_true",
        help="with --postgres: an embedded primary and a synchronous streaming standby under "
        "<data-dir>/postgres-pair, both in the services' URL; `idmesh failover` promotes it",
    )
    p.add_argument("--json", action="store_true", help="print the layout as JSON once serving")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser(
        "failover",
        help="crash the PostgreSQL primary of a mesh started with --standby, promote the "
        "standby, and rebuild the old primary as the new one's standby",
    )
    p.add_argument(
        "--data-dir", help="the mesh's data folder (env IDMESH_DATA_DIR, default ./data-pg)"
    )
    p.set_defaults(func=cmd_failover)

    p = sub.add_parser(
        "down", help="stop a running mesh (given no folder: those of ./data and ./data-pg)"
    )
    p.add_argument(
        "--data-dir",
        help="the mesh's data folder (env IDMESH_DATA_DIR; default: every mesh running in "
        "./data and ./data-pg, the folders of make up and make up-pg)",
    )
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for it to stop")
    p.set_defaults(func=cmd_down)

    sub.add_parser(
        "status", parents=[common], help="health of every service of the mesh"
    ).set_defaults(func=cmd_status)

    p = sub.add_parser(
        "health", parents=[common], help="gRPC health of one service; exit 0 when SERVING"
    )
    p.add_argument("service", nargs="?", help="a service of the mesh, e.g. registry-beeline")
    p.add_argument("--grpc-service", default="", help="the health service name (default: all)")
    p.add_argument("--timeout", type=float, default=2.0)
    p.set_defaults(func=cmd_health)

    p = sub.add_parser("metrics", parents=[common], help="a service's Prometheus metrics")
    p.add_argument("service", nargs="?", help="a service of the mesh, e.g. notifier")
    p.add_argument("--url", help="the /metrics URL, instead of the mesh's")
    p.add_argument("--grep", help="only metrics whose name contains this")
    p.add_argument("--all", action="store_true", help="also the runtime's own metrics")
    p.set_defaults(func=cmd_metrics)
