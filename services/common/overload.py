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

The latency of calls in handlers does not show the queue in front of them. A grpc.aio server
takes each method's calls from gRPC's core one at a time, several event-loop turns apiece; when
calls come faster than that, they wait in the core unseen, for seconds, and the core cancels
them beyond `grpc.server.max_pending_requests` waiting (1,000 by default; all of them at
`grpc.server.max_pending_requests_hard_limit`, 3,000): the client sees CANCELLED, not
RESOURCE_EXHAUSTED. So the limiter also measures that wait, from when each call says it was sent
(x-idmesh-sent-at, which services.common.channels adds; arrived()): while calls are refused and
every call of a method waited more than `max_queue_delay` for an interval (a standing queue,
not a burst: CoDel's test), the limit is cut towards what is in flight, below `minimum` if
need be, down to `saturated_minimum`, so that more calls take the cheap refusal and the loop
catches up; and refusals ask callers to wait at least as long as the queue.
A refusal costs little: no log line of its own (a summary line per second, rpc.shed), no
identity, and a google.rpc.Status built once per limit and retry delay.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import structlog
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
QUEUE_DELAY = Gauge(
    "idmesh_rpc_queue_delay_seconds",
    "The least time the unary calls of a method waited in the last interval before reaching "
    "the interceptor (mostly in gRPC's core, for the accept loop), from x-idmesh-sent-at.",
)

log = structlog.get_logger("idmesh.overload")


WARMUP_WINDOWS = 10
_DECAY = 0.05  # seconds per second: how fast a source's baseline delay (arrived()) rises
_SOURCES_KEPT = 1000
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
        self,
        settings: LimiterSettings,
        *,
        clock: Callable[[], float] = time.perf_counter,
        wall: Callable[[], float] = time.time,
    ) -> None:
        """clock: for intervals; wall: the time since the epoch, for x-idmesh-sent-at."""
        self.settings = settings
        self._clock = clock
        self._wall = wall
        self.limit = float(settings.initial)
        self.in_flight = 0
        self._long: float | None = None
        self._samples = 0
        self._window_sum = 0.0
        self._window_count = 0
        self._window_peak = 0
        # the gradient's floor is `minimum`, except for a while after the loop was saturated
        self._saturated_until = 0.0
        # the queue in front of the interceptor (arrived())
        # source -> (the least delay from its clock to ours lately, when it was seen)
        self._baseline: dict[str, tuple[float, float]] = {}
        self._queue_least: dict[str, float] = {}  # method -> least wait in this interval
        self._queue_since = clock()
        self._refused = 0  # calls refused in this interval
        self.queue_delay = 0.0
        # refusals not yet logged, by method (one summary line per second: rpc.shed)
        self._shed_counts: dict[str, int] = {}
        self._shed_children: dict[str, Any] = {}
        self._shed_logged_at = clock()
        self._refusals: dict[tuple[int, int], Overloaded] = {}  # by (limit, retry delay in ms)
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
        floor = s.minimum if self._clock() >= self._saturated_until else s.saturated_minimum
        self.limit = max(float(min(floor, self.limit)), min(float(s.maximum), limit))
        LIMIT.set(self.limit)

    def arrived(self, method: str, source: str, sent_at: float | None) -> None:
        """A unary call of `method` from `source` (the connection) reached the interceptor;
        its caller sent it at `sent_at` (its clock, seconds since the epoch; None: not said).
        How long it waited is measured against the source's baseline: the least delay (clock
        skew and transit) its calls have shown lately, rising by `_DECAY` seconds per second
        so that a changed skew is learnt. When even the call of a method that waited least in
        an interval of `queue_interval` seconds waited more than `max_queue_delay` (CoDel's
        test: a standing queue, not a burst; per method, as grpc.aio takes each method's
        calls from the core one at a time), and calls were refused meanwhile, cut the limit
        to 0.8x what is in flight, down to `saturated_minimum`, and keep the gradient's floor
        there for `saturated_hold` seconds: fewer calls in handlers leave the event loop free
        to take the queued calls from gRPC's core and refuse them."""
        if sent_at is None or not math.isfinite(sent_at):
            return
        now = self._clock()
        delay = self._wall() - sent_at
        base = self._baseline.get(source)
        if base is None or delay < base[0] + (now - base[1]) * _DECAY:
            self._baseline[source] = (delay, now)
            waited = 0.0
        else:
            waited = delay - base[0] - (now - base[1]) * _DECAY
        least = self._queue_least.get(method)
        if least is None or waited < least:
            self._queue_least[method] = waited
        if now - self._queue_since < self.settings.queue_interval:
            return
        self.queue_delay = max(self._queue_least.values())
        QUEUE_DELAY.set(self.queue_delay)
        refused, self._refused = self._refused, 0
        self._queue_least, self._queue_since = {}, now
        if len(self._baseline) > _SOURCES_KEPT:  # connections come and go
            self._baseline = {k: v for k, v in self._baseline.items() if now - v[1] < 60}
        s = self.settings
        # Only while calls are being refused: a closed loop of callers (each waiting for its
        # answer before the next call) shows a queue too, its own, which refusing cannot shorten
        if not s.enabled or not refused or self.queue_delay <= s.max_queue_delay:
            return
        self._saturated_until = now + s.saturated_hold
        cut = max(float(s.saturated_minimum), min(self.limit, float(self.in_flight)) * 0.8)
        if cut < self.limit:
            self.limit = cut
            LIMIT.set(self.limit)

    def retry_after(self) -> float:
        """Seconds a refused caller should wait: about two calls' time, or the queue in front
        of the interceptor if that is longer; 20 ms to 2 s."""
        typical = self._long if self._long is not None else 0.01
        return max(0.02, min(2.0, max(2 * typical, self.queue_delay)))

    def refusal(self, method: str) -> Overloaded:
        """The refusal of a call beyond the limit: the same object for the same limit and
        delay (its google.rpc.Status is built once, see interceptors); counted, and logged in a
        summary line at most once a second."""
        shed = self._shed_children.get(method)
        if shed is None:  # SHED's child per method, looked up once (not .labels() per call)
            shed = self._shed_children[method] = SHED.labels(method=method)
        shed.inc()
        self._refused += 1
        self._shed_counts[method] = self._shed_counts.get(method, 0) + 1
        now = self._clock()
        if now - self._shed_logged_at >= 1.0:
            self._log_shed(now)
        key = (int(self.limit), math.ceil(self.retry_after() * 1000))
        refusal = self._refusals.get(key)
        if refusal is None:
            if len(self._refusals) > 256:
                self._refusals.clear()
            refusal = self._refusals[key] = Overloaded(
                f"the service is at its limit of {key[0]} calls in flight: retry in {key[1]} ms",
                retry_after=timedelta(milliseconds=key[1]),
            )
        return refusal

    def _log_shed(self, now: float) -> None:
        counts, self._shed_counts = self._shed_counts, {}
        log.warning(
            "rpc.shed",
            seconds=round(now - self._shed_logged_at, 3),
            refused=counts,
            limit=int(self.limit),
            in_flight=self.in_flight,
            queue_ms=round(self.queue_delay * 1000, 1),
        )
        self._shed_logged_at = now


def limited(method: str) -> bool:
    return not method.startswith(EXEMPT_PREFIXES)
