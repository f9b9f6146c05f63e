"""Prometheus metrics: the per-RPC metrics every service shares, and the HTTP endpoint.

The server interceptor records every RPC (count by method and status code, latency histogram);
services define their own metrics next to the code that changes them, with prometheus_client,
in the default registry. `serve_metrics(bind)` exposes /metrics on its own HTTP port. Gauges that
describe stored state (backlogs, oldest ages) are computed at scrape time by a ScrapeCollector,
so they are right after a restart.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import structlog
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

log = structlog.get_logger("idmesh.metrics")

RPC_REQUESTS = Counter(
    "idmesh_rpc_requests",
    "gRPC requests handled, by method and status code.",
    ["method", "code"],
)
RPC_LATENCY = Histogram(
    "idmesh_rpc_latency_seconds",
    "gRPC handling time, by method.",
    ["method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


# The label children per (method, code): .labels() takes a lock and builds keys on every call.
# Bounded: methods are the servers' registered ones, codes the 17 status codes.
_RPC_CHILDREN: dict[tuple[str, str], tuple[Any, Any]] = {}


def observe_rpc(method: str, code: str, seconds: float) -> None:
    children = _RPC_CHILDREN.get((method, code))
    if children is None:
        children = (
            RPC_REQUESTS.labels(method=method, code=code),
            RPC_LATENCY.labels(method=method),
        )
        _RPC_CHILDREN[(method, code)] = children
    children[0].inc()
    children[1].observe(seconds)


def serve_metrics(bind: str) -> int:
    """Serve /metrics over HTTP at bind ("host:port", port 0 picks one); returns the port."""
    host, _, port = bind.rpartition(":")
    server, _thread = start_http_server(int(port), addr=host)
    return int(server.server_port)


class ScrapeCollector(Collector):
    """Metrics computed when Prometheus scrapes, by a coroutine on the service's event loop (a
    store query, say): right after a restart, never stale, and no timer to keep. The HTTP
    server's thread waits for the coroutine at most `timeout` seconds; if it fails, its metrics
    are left out of that scrape (and the failure is logged), the others are still served.

        collector = ScrapeCollector("outbox", backlog_metrics)  # async () -> list[Metric]
        with registered(collector): ...
    """

    def __init__(
        self,
        name: str,
        collect: Callable[[], Awaitable[Iterable[Metric]]],
        *,
        timeout: float = 5.0,
    ) -> None:
        self.name = name
        self._collect = collect
        self._timeout = timeout
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()

    def describe(self) -> Iterable[Metric]:
        return ()  # nothing to check at registration: collect() needs the running loop

    def collect(self) -> Iterable[Metric]:
        if threading.get_ident() == self._loop_thread or self._loop.is_closed():
            return ()  # on the loop's own thread waiting would deadlock
        future = asyncio.run_coroutine_threadsafe(self._gather(), self._loop)
        try:
            return future.result(self._timeout)
        except Exception as exc:
            future.cancel()
            log.warning("metrics.collect_failed", collector=self.name, error=repr(exc))
            return ()

    async def _gather(self) -> list[Metric]:
        return list(await self._collect())


@contextmanager
def registered(collector: Collector, registry: CollectorRegistry = REGISTRY) -> Iterator[None]:
    """collector in the registry (the default one: served on /metrics) for the block."""
    registry.register(collector)
    try:
        yield
    finally:
        registry.unregister(collector)
