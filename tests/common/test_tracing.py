"""W3C trace context and the OTEL_* configuration (services.common.tracing)."""

from __future__ import annotations

import pytest

from services.common import tracing
from services.common.config import ConfigError

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.mark.parametrize(
    ("traceparent", "trace_id"),
    [
        (f"00-{TRACE}-00f067aa0ba902b7-01", TRACE),
        (f"00-{TRACE.upper()}-00f067aa0ba902b7-00", TRACE),
        (f"00-{TRACE}-00f067aa0ba902b7-01-future-fields", TRACE),
        (f"00-{'0' * 32}-00f067aa0ba902b7-01", None),  # an all-zero trace id is invalid
        (f"00-{TRACE}-{'0' * 16}-01", None),
        (f"ff-{TRACE}-00f067aa0ba902b7-01", None),  # version ff is forbidden
        (f"00-{TRACE}-00f067aa0ba902b7-zz", None),
        (f"00-{TRACE[:-1]}g-00f067aa0ba902b7-01", None),
        ("", None),
        (None, None),
    ],
)
def test_a_traceparent_is_read_only_when_well_formed(
    traceparent: str | None, trace_id: str | None
) -> None:
    assert tracing.trace_id_of(traceparent) == trace_id


def test_an_outbound_traceparent_carries_the_request_id_as_its_trace_id() -> None:
    traceparent = tracing.outbound_traceparent(TRACE)
    assert tracing.trace_id_of(traceparent) == TRACE
    assert traceparent.endswith("-00")  # not sampled: no span was made for it


def test_a_request_id_that_is_no_trace_id_gets_a_trace_of_its_own() -> None:
    first = tracing.trace_id_of(tracing.outbound_traceparent("req-123"))
    second = tracing.trace_id_of(tracing.outbound_traceparent("req-123"))
    assert first and second and first != second


@pytest.mark.parametrize(
    ("env", "exporter"),
    [
        ({}, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, "otlp"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4317"}, "otlp"),
        ({"OTEL_TRACES_EXPORTER": "console"}, "console"),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, None),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, None),
    ],
)
def test_exporting_is_off_unless_the_standard_variables_ask_for_it(
    env: dict[str, str], exporter: str | None
) -> None:
    assert tracing.exporter_name(env) == exporter


def test_an_unknown_exporter_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="OTEL_TRACES_EXPORTER='zipkin'"):
        tracing.exporter_name({"OTEL_TRACES_EXPORTER": "zipkin"})


def test_with_exporting_off_no_span_is_made() -> None:
    assert not tracing.enabled()
    with tracing.server_span("/a.B/C", None, TRACE) as span:
        assert span is None
    assert tracing.start_client_span("/a.B/C") is None
