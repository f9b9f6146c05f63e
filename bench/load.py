"""Load generators and latency statistics.

closed_loop: `concurrency` workers each run one operation after another for warmup + duration
seconds; the operations that finish inside the measured window count (throughput = those / the
window), so the cold start and the tail do not bias the figures, and operations slower than the
window (identifications queued behind others at concurrency 64) still count. open_loop: operations
started on a fixed schedule (a steady rate) whatever the latency, so a slow system is not let
off by a slower client (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from services.common.status import honouring_overload

Operation = Callable[[int], Awaitable[object]]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Latencies:
    count: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Latencies:
        if not seconds:
            return cls(0, math.nan, math.nan, math.nan, math.nan, math.nan)
        ordered = sorted(seconds)
        return cls(
            count=len(ordered),
            p50_ms=percentile(ordered, 50) * 1000,
            p90_ms=percentile(ordered, 90) * 1000,
            p99_ms=percentile(ordered, 99) * 1000,
            max_ms=ordered[-1] * 1000,
            mean_ms=sum(ordered) / len(ordered) * 1000,
        )


def percentile(ordered: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending sequence."""
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass(slots=True)
class RunResult:
    concurrency: int
    seconds: float
    completed: int
    errors: int
    throughput: float  # completed operations per second in the measured window
    latency: Latencies
    error_samples: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Errors:
    def __init__(self) -> None:
        self.count = 0
        self.samples: list[str] = []

    def add(self, exc: BaseException) -> None:
        self.count += 1
        if len(self.samples) < 5:
            self.samples.append(f"{type(exc).__name__}: {str(exc)[:300]}")


async def closed_loop(
    op: Operation,
    *,
    concurrency: int,
    duration: float,
    warmup: float,
    first_index: int = 0,
    grace: float = 90.0,
    samples: list[float] | None = None,
) -> RunResult:
    """Run op(i) (i = first_index, first_index+1, ... across all workers) in `concurrency`
    closed loops; measure the operations that end in the window [warmup, warmup + duration].
    samples: a list that receives each measured operation's latency (seconds), to pool the
    latencies of several runs."""
    counter = itertools.count(first_index)
    latencies: list[float] = samples if samples is not None else []
    already = len(latencies)
    errors = _Errors()
    start = time.perf_counter()
    window_start = start + warmup
    window_end = window_start + duration

    async def worker() -> None:
        while (began := time.perf_counter()) < window_end:
            try:
                await op(next(counter))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if time.perf_counter() >= window_start:
                    errors.add(exc)
                continue
            ended = time.perf_counter()
            if window_start <= ended <= window_end:
                latencies.append(ended - began)

    tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
    _done, pending = await asyncio.wait(tasks, timeout=warmup + duration + grace)
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    measured = latencies[already:]
    return RunResult(
        concurrency=concurrency,
        seconds=duration,
        completed=len(measured),
        errors=errors.count,
        throughput=len(measured) / duration,
        latency=Latencies.of(measured),
        error_samples=errors.samples,
    )


async def run_count(
    op: Operation, *, count: int, concurrency: int, first_index: int = 0
) -> tuple[float, RunResult]:
    """Run op(first_index .. first_index+count-1) with `concurrency` closed loops, as fast as
    they go. Returns (wall-clock start time.time(), result over the whole run)."""
    indexes = iter(range(first_index, first_index + count))
    latencies: list[float] = []
    errors = _Errors()

    async def worker() -> None:
        for i in indexes:
            began = time.perf_counter()
            try:
                await op(i)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                errors.add(exc)
                continue
            latencies.append(time.perf_counter() - began)

    wall_start = time.time()
    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    return wall_start, RunResult(
        concurrency=concurrency,
        seconds=elapsed,
        completed=len(latencies),
        errors=errors.count,
        throughput=len(latencies) / elapsed if elapsed > 0 else math.nan,
        latency=Latencies.of(latencies),
        error_samples=errors.samples,
    )


@dataclass(slots=True)
class OpenLoopResult:
    rate: float
    scheduled: int
    completed: int
    errors: int
    send_times: dict[int, float]  # index -> wall-clock time.time() when the call was made
    call_latency: Latencies  # of the calls themselves (send to reply)
    lag_max_ms: float  # how late the generator itself started an operation, at most
    error_samples: list[str] = field(default_factory=list)


async def open_loop(
    op: Operation, *, rate: float, count: int, first_index: int = 0, grace: float = 120.0
) -> OpenLoopResult:
    """Start op(first_index + k) at start + k / rate for k < count, each in its own task."""
    errors = _Errors()
    latencies: list[float] = []
    send_times: dict[int, float] = {}
    lag_max = 0.0

    async def one(index: int) -> None:
        began = time.perf_counter()
        send_times[index] = time.time()
        try:
            await op(index)
        except Exception as exc:
            errors.add(exc)
            return
        latencies.append(time.perf_counter() - began)

    tasks: list[asyncio.Task[None]] = []
    start = time.perf_counter()
    for k in range(count):
        due = start + k / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            lag_max = max(lag_max, -delay)
        tasks.append(asyncio.create_task(one(first_index + k)))
    _done, pending = await asyncio.wait(tasks, timeout=grace) if tasks else (set(), set())
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return OpenLoopResult(
        rate=rate,
        scheduled=count,
        completed=len(latencies),
        errors=errors.count,
        send_times=send_times,
        call_latency=Latencies.of(latencies),
        lag_max_ms=lag_max * 1000,
        error_samples=errors.samples,
    )


SHED_RETRIES = 200


async def honouring_shedding(call: Callable[[], Awaitable[T]]) -> T:
    """Make the call as a well-behaved client does: while the service sheds it, wait the delay
    it asks for and call again (services.common.status.honouring_overload)."""
    return await honouring_overload(call, attempts=SHED_RETRIES)
