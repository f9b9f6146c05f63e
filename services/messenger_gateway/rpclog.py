"""One log line per RPC: the use cases add the domain's fields to the server's `rpc` line (bound
in structlog's context, which the interceptor's line merges) instead of logging lines of their
own."""

from __future__ import annotations

from typing import Final

import structlog

# The fields the identification use cases add; background work started from an RPC (a
# verification task) drops them, so that its lines do not carry the RPC's state.
FIELDS: Final = (
    "user_id",
    "phone",
    "identification_id",
    "state",
    "reason",
    "operator_id",
    "carrier",
    "route_source",
    "replaced",
    "replaced_state",
    "replayed",
    "trace_id",
    "verification_deadline",
    "attempts_left",
    "since",
    "reassignment",
)


def annotate(**fields: object) -> None:
    """Add fields (names from FIELDS) to the current RPC's log line."""
    structlog.contextvars.bind_contextvars(**fields)


def forget_annotations() -> None:
    """Drop the RPC's fields from this task's context (a task copies its creator's)."""
    structlog.contextvars.unbind_contextvars(*FIELDS)
