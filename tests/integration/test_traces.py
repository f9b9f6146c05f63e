"""OpenTelemetry traces over a real mesh: every process exports its spans over OTLP/gRPC to a
collector in the test (the standard OTEL_EXPORTER_OTLP_ENDPOINT), and one identification is one
trace across the gateway, the registry and back; one termination is one trace from the
registry's RPC through the notifier to the gateway's revocation."""

from __future__ import annotations

import dataclasses
import secrets
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from idmesh.gateway.v1 import gateway_pb2
from idmesh.registry.v1 import registry_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

from services.localmesh import Mesh, MeshClient, demo_spec, eventually, log_lines_with

pytestmark = pytest.mark.mesh

State = gateway_pb2.IdentificationState
SERVER, CLIENT, INTERNAL = (
    trace_pb2.Span.SPAN_KIND_SERVER,
    trace_pb2.Span.SPAN_KIND_CLIENT,
    trace_pb2.Span.SPAN_KIND_INTERNAL,
)


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP trace collector that keeps what it is sent: (service.name, span)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.spans: list[tuple[str, trace_pb2.Span]] = []

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        with self._lock:
            for resource_spans in request.resource_spans:
                service = next(
                    (
                        a.value.string_value
                        for a in resource_spans.resource.attributes
                        if a.key == "service.name"
                    ),
                    "",
                )
                for scope in resource_spans.scope_spans:
                    self.spans += [(service, span) for span in scope.spans]
        return trace_service_pb2.ExportTraceServiceResponse()

    def trace(self, trace_id: str) -> list[tuple[str, trace_pb2.Span]]:
        wanted = bytes.fromhex(trace_id)
        with self._lock:
            return [(s, span) for s, span in self.spans if span.trace_id == wanted]


@pytest.fixture(scope="module")
def collector() -> Iterator[tuple[Collector, int]]:
    sink = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(sink, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield sink, port
    server.stop(None)


@pytest.fixture(scope="module")
def traced_mesh(
    collector: tuple[Collector, int], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Mesh]:
    _, port = collector
    spec = dataclasses.replace(
        demo_spec(free_ports=True),
        common_env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        },
    )
    mesh = Mesh(spec, Path(tmp_path_factory.mktemp("traced")))
    mesh.start()
    yield mesh
    codes = mesh.stop()
    assert all(code == 0 for code in codes.values()), codes


def traceparent() -> tuple[str, tuple[tuple[str, str], ...]]:
    """A new trace id, and the metadata of a call made in it (a sampled root span)."""
    trace_id = secrets.token_hex(16)
    return trace_id, (("traceparent", f"00-{trace_id}-{secrets.token_hex(8)}-01"),)


def names(spans: list[tuple[str, trace_pb2.Span]]) -> set[tuple[str, str, int]]:
    return {(service, span.name, span.kind) for service, span in spans}


async def spans_of(
    collector: Collector, trace_id: str, wanted: set[tuple[str, str, int]]
) -> list[tuple[str, trace_pb2.Span]]:
    def complete() -> list[tuple[str, trace_pb2.Span]] | None:
        spans = collector.trace(trace_id)
        return spans if wanted <= names(spans) else None

    try:
        found: list[tuple[str, trace_pb2.Span]] = await eventually(
            complete, within=30, what=f"the spans of trace {trace_id}"
        )
    except AssertionError:
        missing = wanted - names(collector.trace(trace_id))
        raise AssertionError(f"trace {trace_id} lacks {sorted(missing)}") from None
    return found


async def test_one_identification_is_one_trace_across_the_gateway_and_the_registry(
    traced_mesh: Mesh, collector: tuple[Collector, int]
) -> None:
    sink, _ = collector
    trace_id, metadata = traceparent()
    client = MeshClient(traced_mesh)
    try:
        phone = await client.create_subscriber("beeline")
        started = await client.gateway("alpha").StartIdentification(
            gateway_pb2.StartIdentificationRequest(user_id="traced-user", phone_number=phone),
            metadata=metadata,
            timeout=10,
        )
        code = client.sms_code("alpha", started.identification.identification_id)
        done = await client.gateway("alpha").ConfirmPossession(
            gateway_pb2.ConfirmPossessionRequest(
                identification_id=started.identification.identification_id, code=code
            ),
            metadata=metadata,
            timeout=30,
        )
        assert done.identification.state == State.IDENTIFICATION_STATE_IDENTIFIED
    finally:
        await client.close()

    gateway = "idmesh.gateway.v1.GatewayService"
    verify = "idmesh.registry.v1.RegistryService/VerifySubscriber"
    spans = await spans_of(
        sink,
        trace_id,
        {
            ("gateway-alpha", f"{gateway}/StartIdentification", SERVER),
            ("gateway-alpha", f"{gateway}/ConfirmPossession", SERVER),
            ("gateway-alpha", "verification", INTERNAL),
            ("gateway-alpha", verify, CLIENT),
            ("gateway-alpha", "sqlite.transaction", INTERNAL),
            ("registry-beeline", verify, SERVER),
            ("registry-beeline", "sqlite.transaction", INTERNAL),
        },
    )
    by_id = {span.span_id: (service, span) for service, span in spans}
    [(_, server)] = [(s, x) for s, x in spans if x.name == verify and x.kind == SERVER]
    assert by_id[server.parent_span_id][0] == "gateway-alpha"  # the gateway's call
    assert by_id[server.parent_span_id][1].kind == CLIENT
    # The log lines of the identification's RPCs carry the trace id as their request id.
    lines = log_lines_with(traced_mesh, "gateway-alpha", trace_id)
    assert {line.get("request_id") for line in lines} == {trace_id}
    assert any(line.get("event") == "rpc" for line in lines)


async def test_one_termination_is_one_trace_from_the_registry_to_the_revocation(
    traced_mesh: Mesh, collector: tuple[Collector, int]
) -> None:
    sink, _ = collector
    client = MeshClient(traced_mesh)
    try:
        phone = await client.create_subscriber("beeline")
        await client.identify("alpha", "traced-revoked", phone)
        trace_id, metadata = traceparent()
        await client.registry_admin("beeline").TerminateContract(
            registry_pb2.TerminateContractRequest(phone_number=phone),
            metadata=metadata,
            timeout=10,
        )
        await client.wait_revoked("alpha", "traced-revoked")
    finally:
        await client.close()

    publish = "idmesh.notifier.v1.NotifierService/Publish"
    await spans_of(
        sink,
        trace_id,
        {
            (
                "registry-beeline",
                "idmesh.registry.v1.RegistryAdminService/TerminateContract",
                SERVER,
            ),
            ("registry-beeline", "outbox.publish", INTERNAL),
            ("registry-beeline", publish, CLIENT),
            ("notifier", publish, SERVER),
            ("gateway-alpha", "notice.apply", INTERNAL),
        },
    )
