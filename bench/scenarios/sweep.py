"""The level sweep every scenario that measures at several concurrencies runs: at each level a
closed loop of the real server ("mesh", profiled when profiling is on), then of each baseline on
the same stack, and the throughput and p99 ratios of "mesh" to "echo"."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from typing import Any

from bench.load import Operation, closed_loop
from bench.scenarios.context import Context, level_result, measured, progress, ratio

MESH = "mesh"  # the real server: the figure
ECHO = "echo"  # the echo server on the same stack: the baseline of the ratios


async def sweep(
    ctx: Context,
    *,
    label: str,
    levels: Sequence[int],
    seconds: float,
    ops: Mapping[str, Operation],
    names: Mapping[str, Sequence[str]],
) -> list[dict[str, Any]]:
    """For each concurrency level, a closed loop of each op in turn ("mesh" first), measured
    for `seconds` after the config's warm-up, with the CPU per operation of the processes
    `names[kind]`. Returns one dict per level: "concurrency", each kind's figures,
    "throughput_ratio" and "p99_ratio" (mesh / echo)."""
    if next(iter(ops), None) != MESH or ECHO not in ops:
        raise ValueError(f"a sweep runs {MESH!r} first and needs {ECHO!r}: {list(ops)}")
    results = []
    for concurrency in levels:
        level: dict[str, Any] = {"concurrency": concurrency}
        for kind, op in ops.items():
            profile = (
                ctx.profiling(f"{label}-c{concurrency}", names[kind])
                if kind == MESH
                else nullcontext()
            )
            with profile:
                run, cpu = await measured(
                    ctx,
                    names[kind],
                    closed_loop(
                        op,
                        concurrency=concurrency,
                        duration=seconds,
                        warmup=ctx.config.warmup_seconds,
                    ),
                )
            level[kind] = level_result(run, cpu, names[kind])
        mesh, echo = level[MESH], level[ECHO]
        level["throughput_ratio"] = ratio(mesh["throughput"], echo["throughput"])
        level["p99_ratio"] = ratio(mesh["latency"]["p99_ms"], echo["latency"]["p99_ms"])
        results.append(level)
        progress(
            f"{label} c={concurrency}: "
            + ", ".join(
                f"{kind} {level[kind]['throughput']:,.1f}/s "
                f"p99 {level[kind]['latency']['p99_ms']:.1f} ms"
                for kind in ops
            )
        )
    return results
