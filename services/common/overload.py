"""Load shedding: a bound on the unary RPCs a process works on at once, found from latency.

A service under more load than it can take must say so in milliseconds (RESOURCE_EXHAUSTED with
a retry delay) instead of queueing every call until its caller's deadline. The bound is not a
guessed requests-per-second figure: like Netflix's concurrency-limits (Gradient2) and Envoy's
adaptive concurrency filter it is a concurrency limit adjusted from measured latency. By Little's
law, in-flight = throughput x latency: while calls take about as long as they do unloaded, the
limit grows; when latency rises above `tolerance` times its long-run average (calls are queueing,
here mostly for the store's single writer), the limit shrinks by that ratio. A call that arrives
while `limit` calls are in flight is refused at once, before any work, so accepted calls keep a
bounded latency and a refused call has changed nothing.

Only unary calls count: streams (Subscribe, the bulk imports) are long by nature, and health and
reflection are never refused. The limiter is per process; several replicas each find their own.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import timedelta

from prometheus_client import Counter, Gauge

from services.common.config import LimiterSettings
from services.common.ratelimit import RateLimited

SHED = Counter(
    "idmesh_rpc_shed",
    "Unary calls refused RESOURCE_EXHAUSTED at once because the process was at its concurrency "
    "limit (load shedding), by method.",
    ["method"],
)
LIMIT = Gauge(
    "idmesh_rpc_concurrency_limit",
    "The adaptive bound on unary calls in flight (idmesh_rpc_in_flight); calls beyond it are shed.",
)
IN_FLIGHT = Gauge("idmesh_rpc_in_flight", "Unary calls in flight on this process.")

WARMUP_WINDOWS = 10
# Never refused: what probes and tooling call.
EXEMPT_PREFIXES = ("/grpc.health.", "/grpc.reflection.")


class Overloaded(RateLimited):
    """The process is at its concurrency limit: nothing was done; retry after the delay."""

    REASON = "OVERLOADED"


class ConcurrencyLimiter:
    """Admission control for unary calls: try_acquire() before the handler, release() after.

    The limit follows Gradient2: per window of completed calls, with short = the window's mean
    latency and long = the long-run moving average, gradient = clamp(tolerance * long / short,
    0.5, 1); new = limit * gradient + sqrt(limit) (room to probe upwards), smoothed. The limit
    does not grow while less than half of it is used (the caller, not the service, is the
    bottleneck then)."""

    def __init__(
        self, settings: LimiterSettings, *, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self.settings = settings
        self._clock = clock
        self.limit = float(settings.initial)
        self.in_flight = 0
        self._long: float | None = None
        self._samples = 0
        self._window_sum = 0.0
        self._window_count = 0
        self._window_peak = 0
        LIMIT.set(self.limit)

    def try_acquire(self) -> bool:
        if self.settings.enabled and self.in_flight >= int(self.limit):
            return False
        self.in_flight += 1
        self._window_peak = max(self._window_peak, self.in_flight)
        IN_FLIGHT.set(self.in_flight)
        return True

    def release(self, seconds: float) -> None:
        """A call admitted by try_acquire() ended after `seconds`."""
        self.in_flight -= 1
        IN_FLIGHT.set(self.in_flight)
        self._window_sum += seconds
        self._window_count += 1
        if self._window_count >= self.settings.window_samples:
            self._update(self._window_sum / self._window_count, self._window_peak)
            self._window_sum, self._window_count, self._window_peak = 0.0, 0, self.in_flight

    def _update(self, short: float, peak: int) -> None:
        s = self.settings
        short = max(short, 1e-6)
        self._samples += 1
        if self._long is None:
            self._long = short
        elif self._samples <= WARMUP_WINDOWS:  # a plain mean until there is a baseline
            self._long += (short - self._long) / self._samples
        else:  # then a slow exponential moving average over about long_window windows
            self._long += (short - self._long) * 2 / (s.long_window + 1)
        if self._long / short > 2:  # load has passed: let the average come back down quickly
            self._long *= 0.95
        if peak < self.limit / 2:
            return
        gradient = max(0.5, min(1.0, s.tolerance * self._long / short))
        target = self.limit * gradient + math.sqrt(self.limit)
        limit = self.limit * (1 - s.smoothing) + target * s.smoothing
        self.limit = max(float(s.minimum), min(float(s.maximum), limit))
        LIMIT.set(self.limit)

    def retry_after(self) -> float:
        """Seconds a refused caller should wait: about two calls' time, 20 ms to 2 s."""
        typical = self._long if self._long is not None else 0.01
        return max(0.02, min(2.0, 2 * typical))

    def refusal(self, method: str) -> Overloaded:
        SHED.labels(method=method).inc()
        delay = self.retry_after()
        return Overloaded(
            f"the service is at its limit of {int(self.limit)} calls in flight: retry in "
            f"{math.ceil(delay * 1000)} ms",
            retry_after=timedelta(milliseconds=math.ceil(delay * 1000)),
        )


def limited(method: str) -> bool:
    return not method.startswith(EXEMPT_PREFIXES)
