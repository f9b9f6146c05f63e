"""Prometheus metrics: the per-RPC metrics every service shares, and the HTTP endpoint.

The server interceptor records every RPC (count by method and status code, latency histogram);
services define their own metrics next to the code that changes them, with prometheus_client,
in the default registry. `serve_metrics(bind)` exposes /metrics on its own HTTP port.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

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


def observe_rpc(method: str, code: str, seconds: float) -> None:
    RPC_REQUESTS.labels(method=method, code=code).inc()
    RPC_LATENCY.labels(method=method).observe(seconds)


def serve_metrics(bind: str) -> int:
    """Serve /metrics over HTTP at bind ("host:port", port 0 picks one); returns the port."""
    host, _, port = bind.rpartition(":")
    server, _thread = start_http_server(int(port), addr=host)
    return int(server.server_port)
