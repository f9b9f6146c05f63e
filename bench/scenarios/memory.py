"""5. Memory: a gateway holding `pending_verifications` pending verifications (its operator
accepts TCP and never answers, the window an hour long), against the same gateway idle; then the
delivery policy's index of `index_users` users and `index_rules` rules, loaded from a seeded
gateway store in a process of its own (bench.index_probe): its bytes per user and per rule, the
load's seconds per million users, the process's resident memory before and after. It runs
with a mesh of its own once the pass's meshes have stopped; the pass records every service's
resident memory after each scenario beside it."""

from __future__ import annotations

import asyncio
import json
import math
import sys
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
    index = await measure_index(config, work_dir)
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
        "index": index,
    }


async def measure_index(config: BenchConfig, work_dir: Path) -> dict[str, Any]:
    """The policy index of config.index_users users with config.index_rules rules between them
    (and one in five users consenting to an automated sender, one in ten refusing senders not
    accepted), seeded into a gateway store with sqlite3 and loaded by bench.index_probe."""
    users, per_user = config.index_users, max(1, config.index_rules // config.index_users)
    path = work_dir / "index-gateway.db"
    path.unlink(missing_ok=True)
    started = time.perf_counter()
    await asyncio.to_thread(seed.seed_gateway, path, GATEWAY_MIGRATIONS, ())
    await asyncio.to_thread(seed.seed_policy, path, users, seed.utcnow(), rules_per_user=per_user)
    seeded = time.perf_counter() - started
    probe = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.index_probe",
        str(path),
        str(users),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await probe.communicate()
    path.unlink(missing_ok=True)
    if probe.returncode != 0:
        raise BenchFailure(f"the index probe failed: {err.decode()[-2000:]}")
    result: dict[str, Any] = json.loads(out)
    result["rules"] = users * per_user
    result["seed_seconds"] = round(seeded, 1)
    if result["users"] != users:
        raise BenchFailure(f"the index holds {result['users']} users of {users} seeded")
    progress(
        f"policy index: {users:,} users, {result['pairs']:,} rules and consents: "
        f"{result['bytes_per_user']} bytes/user, {result['bytes_per_rule']} bytes/rule, "
        f"loaded in {result['load_seconds']} s ({result['load_seconds_per_million_users']} s "
        f"per million users), RSS {result['rss_before_mb']:.0f} -> {result['rss_after_mb']:.0f} MB"
    )
    return result


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
        Target(
            name="policy index ({index.users:,} users, {index.rules:,} rules): bytes per user",
            figure="index.bytes_per_user",
            unit="bytes/user",
            against="value",
            op="<=",
            threshold=40.0,
            goal_unit=" bytes",
            optional=True,
            doc="the policy index's arrays per user (ids, numbers, flags, lookup keys, pair "
            "offsets): at most 40 bytes",
        ),
        Target(
            name="policy index ({index.users:,} users, {index.rules:,} rules): bytes per rule",
            figure="index.bytes_per_rule",
            unit="bytes/rule",
            against="value",
            op="<=",
            threshold=16.0,
            goal_unit=" bytes",
            optional=True,
            doc="the policy index's arrays per rule or consent (the sender's row and the "
            "pair's bits): at most 16 bytes",
        ),
        Target(
            name="policy index ({index.users:,} users): load from the store",
            figure="index.load_seconds_per_million_users",
            unit="s per million users",
            optional=True,
            doc="the seconds to read the store's snapshot and build the index, per million "
            "users, shown without a goal",
        ),
        Target(
            name="policy index ({index.users:,} users): resident memory after the load",
            figure="index.rss_after_mb",
            unit="MB",
            baseline="index.rss_before_mb",
            baseline_name="the same process before the load",
            optional=True,
            doc="the probe process's resident memory holding the index, beside the same "
            "process before the load, shown without a goal",
        ),
    ),
)
