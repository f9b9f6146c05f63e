"""5. Memory: a gateway holding `pending_verifications` pending verifications (its operator
accepts TCP and never answers, the window an hour long), against the same gateway idle. It runs
with a mesh of its own once the pass's meshes have stopped; the pass records every service's
resident memory after each scenario beside it."""

from __future__ import annotations

import asyncio
import math
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench import procs, seed, topology
from bench.config import BenchConfig
from bench.scenarios.context import BenchFailure, progress, ratio
from bench.scenarios.spec import Scenario, Target
from bench.scenarios.stores import sqlite_fetch
from services.localmesh import Blackhole, Mesh
from services.messenger_gateway.adapters.schema import MIGRATIONS as GATEWAY_MIGRATIONS


async def run_alone(config: BenchConfig, work_dir: Path) -> dict[str, Any]:
    """gateway-gamma, started empty (the idle baseline), then restarted over `pending`
    VERIFYING identifications seeded into its store: it resumes each one and asks an operator
    that never answers, so all of them stay pending for the (hour-long) window."""
    hole = Blackhole()
    window = 3600.0
    mesh = Mesh(topology.pending_spec(hole.address, window), work_dir / "pending-mesh")
    gateway = f"gateway-{topology.PENDING_MESSENGER}"
    try:
        await asyncio.to_thread(mesh.start)
        await asyncio.sleep(config.pending_settle_seconds)
        idle = procs.rss_mb(topology.pids(mesh.services)[gateway])
        await asyncio.to_thread(mesh.terminate, gateway)
        count = config.pending_verifications
        await asyncio.to_thread(
            seed.seed_gateway,
            topology.db_path(mesh, gateway),
            GATEWAY_MIGRATIONS,
            seed.verifying_rows(
                topology.PENDING_OPERATOR, count, seed.utcnow(), timedelta(seconds=window)
            ),
        )
        started = time.perf_counter()
        await asyncio.to_thread(mesh.restart, gateway, 120.0)
        resumed_seconds = time.perf_counter() - started
        pid = topology.pids(mesh.services)[gateway]
        samples: list[float] = []
        deadline = time.monotonic() + max(config.pending_settle_seconds, 0.5)
        while time.monotonic() < deadline:
            value = procs.rss_mb(pid)
            if value is not None:
                samples.append(value)
            await asyncio.sleep(0.25)
        rows = await asyncio.to_thread(
            sqlite_fetch,
            topology.db_path(mesh, gateway),
            "SELECT count(*) FROM identifications WHERE state = 'VERIFYING'",
        )
        still_pending = int(rows[0][0])
        cpu = procs.cpu_seconds(pid)
    finally:
        await asyncio.to_thread(mesh.stop)
        hole.close()
    if still_pending != count:
        raise BenchFailure(f"{count - still_pending} of {count} pending verifications ended")
    final = samples[-1] if samples else math.nan
    peak = max(samples) if samples else math.nan
    progress(
        f"memory: gateway idle {idle or 0:.0f} MB, with {count} pending {final:.0f} MB "
        f"(peak {peak:.0f})"
    )
    return {
        "status": "ok",
        "pending": count,
        "window_seconds": window,
        "idle_rss_mb": round(idle or math.nan, 1),
        "pending_rss_mb": round(final, 1),
        "pending_rss_peak_mb": round(peak, 1),
        "seconds_to_serving_with_pending": round(resumed_seconds, 2),
        "cpu_seconds_total": cpu,
        "ratio": ratio(peak, idle or math.nan),
    }


SCENARIO = Scenario(
    name="memory",
    title="gateway RSS with pending verifications",
    run_alone=run_alone,
    targets=(
        Target(
            name="gateway RSS with {pending:,} pending verifications",
            figure="pending_rss_peak_mb",
            unit="MB",
            baseline="idle_rss_mb",
            baseline_name="same gateway idle",
            against="value",
            op="<",
            threshold=150.0,
            goal_unit=" MB",
            doc="the gateway's peak resident memory while it holds the pending verifications: "
            "under 150 MB (the same gateway idle is shown beside it)",
        ),
    ),
)
