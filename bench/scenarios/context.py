"""What the scenarios share: the pass's meshes and channels (Context), the CPU a block of work
costs the named processes, the ratio to a same-run baseline, progress lines, the failure a
scenario raises when an operation did not end as it must.

On PostgreSQL with several replicas of every service, the load is spread over the replicas
(round robin, call by call) as a load balancer would, and the CPU figures count every replica
and the database server (procs.POSTGRES).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc

from bench import procs, topology
from bench.config import SQLITE, BenchConfig
from bench.load import Latencies, RunResult
from bench.topology import EchoMesh, PostgresServer
from services.common.channels import open_channel
from services.common.identity import Caller
from services.localmesh import Mesh

CALL_TIMEOUT = 60.0
T = TypeVar("T")


class BenchFailure(Exception):
    """An operation did not end as it must (wrong state, wrong count): a bench bug or a
    service bug, never a slow run."""


@dataclass
class Context:
    """What the scenarios of a pass share: the config, the meshes, channels, the profiles."""

    config: BenchConfig
    mesh: Mesh
    echo: EchoMesh
    work_dir: Path
    profile_dir: Path
    postgres: PostgresServer | None = None  # the pass's server, on PostgreSQL
    channels: list[grpc.aio.Channel] = field(default_factory=list)
    profiles: dict[str, Any] = field(default_factory=dict)

    def channel(self, address: str, identity: Caller) -> grpc.aio.Channel:
        """A channel as the services open theirs (open_channel), acting as identity."""
        channel = open_channel(address, identity=identity, tls=self.mesh.credentials(identity))
        self.channels.append(channel)
        return channel

    def raw_channel(self, address: str, identity: Caller) -> grpc.aio.Channel:
        """A bare grpc.aio channel: default options, no interceptors, the same transport."""
        tls = self.mesh.credentials(identity)
        channel = (
            grpc.aio.secure_channel(address, tls.channel_credentials())
            if tls is not None
            else grpc.aio.insecure_channel(address)
        )
        self.channels.append(channel)
        return channel

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()

    def replica_channels(self, deployment: str, identity: Caller) -> list[grpc.aio.Channel]:
        """A channel to each replica of a service deployment (one on SQLite)."""
        return [
            self.channel(self.mesh.address(name), identity)
            for name in topology.replicas(self.mesh, deployment)
        ]

    def names(self, *deployments: str) -> tuple[str, ...]:
        """The processes whose CPU a figure counts: every replica of the deployments, and the
        database server on PostgreSQL."""
        names = [n for d in deployments for n in topology.replicas(self.mesh, d)]
        if self.postgres is not None:
            names.append(procs.POSTGRES)
        return tuple(names)

    def mesh_pids(self) -> dict[str, int]:
        pids = {**topology.pids(self.mesh.services), **topology.pids(self.echo.services)}
        if self.postgres is not None:
            pids[procs.POSTGRES] = self.postgres.pid
        return pids

    def profiling(self, label: str, names: Sequence[str]) -> AbstractContextManager[Any]:
        """py-spy on the named services while the block runs, when profiling is on (the
        database server is C: its CPU time is measured, not profiled)."""
        if not self.config.profile:
            return nullcontext()
        if self.config.engine != SQLITE:
            label = f"{self.config.engine}-{label}"
        pids = {n: p for n, p in self.mesh_pids().items() if n in names and n != procs.POSTGRES}
        profiler = procs.Profiler(self.profile_dir, label, pids)
        self.profiles[label] = profiler
        return profiler


def level_result(run: RunResult, cpu: dict[str, float], names: Sequence[str]) -> dict[str, Any]:
    """A run's figures plus the CPU milliseconds each process spent per completed operation."""
    result = run.as_dict()
    ops = max(run.completed, 1)
    result["cpu_ms_per_op"] = {n: round(cpu[n] * 1000 / ops, 3) for n in names if n in cpu}
    return result


async def measured(
    ctx: Context, names: Sequence[str], work: Awaitable[T]
) -> tuple[T, dict[str, float]]:
    """Await work (not started before this call); return its result and the CPU seconds the
    named processes spent meanwhile."""
    pids = {n: p for n, p in ctx.mesh_pids().items() if n in names}
    mark = procs.cpu_mark(pids)
    result = await work
    return result, procs.cpu_since(mark, pids)


def ratio(value: float, baseline: float) -> float:
    """value / baseline to 3 places; NaN when either is missing or the baseline is 0."""
    if not baseline or math.isnan(baseline) or math.isnan(value):
        return math.nan
    return round(value / baseline, 3)


def latency_dict(latency: Latencies) -> dict[str, Any]:
    """A Latencies as JSON, milliseconds to 3 places."""
    values = {name: getattr(latency, name) for name in latency.__slots__}
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in values.items()}


async def idle_cpu(ctx: Context) -> dict[str, float]:
    """CPU seconds per second each of the mesh's processes (and the database server) spends
    while nothing calls it: the background work (relays, polls, leases, LISTEN wake-ups)."""
    names = [n for n in ctx.mesh_pids() if not n.startswith("echo-")]
    seconds = ctx.config.idle_seconds
    _, cpu = await measured(ctx, names, asyncio.sleep(seconds))
    return {n: round(v / seconds, 4) for n, v in cpu.items()}


def progress(message: str) -> None:
    print(f"  {message}", flush=True)
