"""The identification flow's metrics, their labelled children made once (a `.labels()` look-up
per call costs a lock and a dictionary walk on the request path)."""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import cache

from prometheus_client import Counter, Histogram

from services.messenger_gateway.identification.model import Identification, Reason, State

IDENTIFICATIONS_STARTED = Counter(
    "idmesh_gateway_identifications_started",
    "Identifications started (a one-time code sent), by the operator the number routes to "
    "(none: no configured operator).",
    ["operator_id"],
)
IDENTIFICATIONS_COMPLETED = Counter(
    "idmesh_gateway_identifications_completed",
    "Identifications ended, by outcome (identified, not_completed) and reason (none for "
    "identified; no_subscriber, operator_timeout, no_operator, agreement_refused, code_expired, "
    "too_many_attempts).",
    ["outcome", "reason"],
)
VERIFICATION_SECONDS = Histogram(
    "idmesh_gateway_verification_duration_seconds",
    "From possession confirmed (VERIFYING) to the verification's outcome; the window is "
    "idmesh_gateway_verification_window_seconds (20 minutes by law).",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 900, 1200),
)
IDENTIFICATIONS_REVOKED = Counter(
    "idmesh_gateway_identifications_revoked",
    "Identifications revoked by termination notices, by reason (contract_terminated, ported_out).",
    ["reason"],
)
NOTICES = Counter(
    "idmesh_gateway_notices",
    "Termination notices taken from the notifier, by result (applied, duplicate).",
    ["result"],
)
NOTICES_APPLIED = NOTICES.labels(result="applied")
NOTICES_DUPLICATE = NOTICES.labels(result="duplicate")
REVOKED_BY_REASON = {
    reason: IDENTIFICATIONS_REVOKED.labels(reason=reason.value.lower())
    for reason in (Reason.CONTRACT_TERMINATED, Reason.PORTED_OUT)
}


@cache
def _completed_child(state: State, reason: Reason) -> Counter:
    outcome = "identified" if state is State.IDENTIFIED else "not_completed"
    label = "none" if reason is Reason.UNSPECIFIED else reason.value.lower()
    return IDENTIFICATIONS_COMPLETED.labels(outcome=outcome, reason=label)


@cache
def _started_child(operator_id: str) -> Counter:
    return IDENTIFICATIONS_STARTED.labels(operator_id=operator_id)


def completed(state: State, reason: Reason) -> None:
    _completed_child(state, reason).inc()


def started(operator_id: str | None) -> None:
    # operator ids are the configured ones (a number no configured operator serves is refused
    # before), so the cache stays as small as the configuration
    _started_child(operator_id or "none").inc()


def observe_verification(ident: Identification, window: timedelta, now: datetime) -> None:
    if ident.verification_deadline is not None:
        began = ident.verification_deadline - window
        VERIFICATION_SECONDS.observe(max(0.0, (now - began).total_seconds()))
