"""The chaos checker finds each kind of violation in a recorded history and a final state, and
passes a consistent one (no mesh: histories and snapshots built by hand)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from tools.chaos.checker import check
from tools.chaos.history import Record
from tools.chaos.state import Snapshot, outstanding

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
EARLIER = "2026-01-01T11:59:00.000000+00:00"
DEADLINE = "2026-01-01T11:59:30.000000+00:00"


def op(name: str, ok: bool | None = True, **args: Any) -> Record:
    result = args.pop("result", {})
    return Record(kind="op", name=name, round=1, args=args, t0=0, t1=1, ok=ok, result=result)


def identified_world() -> tuple[list[Record], Snapshot]:
    """alpha's user u1 identified at beeline on contract C1 (code CODE-1); nothing ended."""
    records = [
        op("create", operator="beeline", phone="+79030000001", contract_id="C1"),
        op(
            "start",
            messenger="alpha",
            user="u1",
            phone="+79030000001",
            result={"identification_id": "i1", "state": "IDENTIFICATION_STATE_AWAITING_CODE"},
        ),
        op(
            "confirm",
            messenger="alpha",
            user="u1",
            identification_id="i1",
            result={"identification_id": "i1", "state": "IDENTIFICATION_STATE_IDENTIFIED"},
        ),
    ]
    snap = Snapshot(taken_at=NOW)
    snap.contracts[("beeline", "C1")] = {
        "contract_id": "C1",
        "phone_number": "+79030000001",
        "state": "active",
        "terminated_at": None,
    }
    snap.bindings = [
        {
            "operator": "beeline",
            "contract_id": "C1",
            "messenger_id": "alpha",
            "identification_code": "CODE-1",
        }
    ]
    snap.identifications = {
        "alpha": [
            {
                "identification_id": "i1",
                "user_id": "u1",
                "state": "IDENTIFIED",
                "reason": "UNSPECIFIED",
                "operator_id": "beeline",
                "identification_code": "CODE-1",
                "verification_deadline": DEADLINE,
                "identified_at": EARLIER,
            }
        ],
        "beta": [],
    }
    snap.inbox = {"alpha": [], "beta": []}
    snap.cursors = {"alpha": 0, "beta": 0}
    snap.access = {("alpha", "u1"): True}
    return records, snap


def terminate(records: list[Record], snap: Snapshot, *, applied: bool = True) -> None:
    """C1 terminated (acknowledged), its notice published, delivered and applied at alpha."""
    records.append(
        op(
            "terminate",
            operator="beeline",
            phone="+79030000001",
            result={"contract_id": "C1", "bindings": [["alpha", "CODE-1"]]},
        )
    )
    snap.contracts[("beeline", "C1")] |= {"state": "terminated", "terminated_at": EARLIER}
    event = {
        "event_id": "e1",
        "messenger_id": "alpha",
        "operator_id": "beeline",
        "identification_code": "CODE-1",
    }
    snap.outbox = [{**event, "operator": "beeline", "published_at": EARLIER}]
    snap.events = [{**event, "seq": 1}]
    snap.sequences = {"alpha": {"head_seq": 1, "acked_seq": 1}}
    if applied:
        snap.inbox["alpha"] = [{"event_id": "e1", "seq": 1, "revoked": 1}]
        snap.cursors["alpha"] = 1


def invariants(records: list[Record], snap: Snapshot) -> set[str]:
    return {v.split(":", 1)[0] for v in check(records, snap).violations}


def test_a_consistent_history_and_state_pass_and_are_counted() -> None:
    records, snap = identified_world()
    report = check(records, snap)
    assert report.violations == []
    assert report.counts["identified_users"] == 1
    assert report.counts["creates_acked"] == 1
    assert report.counts["outcomes_seen"] == 1


def test_a_revoked_user_after_an_acknowledged_termination_passes() -> None:
    records, snap = identified_world()
    terminate(records, snap)
    snap.identifications["alpha"][0] |= {"state": "REVOKED", "reason": "CONTRACT_TERMINATED"}
    snap.access[("alpha", "u1")] = False
    report = check(records, snap)
    assert report.violations == []
    assert report.counts["terminated_bindings"] == 1
    assert report.counts["notices"] == 1


def test_a_lost_revocation_is_found() -> None:
    """The notice was applied, yet the user stayed IDENTIFIED on the terminated contract (the
    issue-10 bug: the answer recorded after the notice)."""
    records, snap = identified_world()
    terminate(records, snap)
    assert invariants(records, snap) == {
        "termination_not_enforced",
        "identified_on_terminated_contract",
    }


def test_a_notice_never_applied_is_found() -> None:
    records, snap = identified_world()
    terminate(records, snap, applied=False)
    snap.identifications["alpha"][0] |= {"state": "REVOKED", "reason": "CONTRACT_TERMINATED"}
    snap.access[("alpha", "u1")] = False
    assert invariants(records, snap) == {"notice_not_applied", "cursor_behind"}


def test_a_sequence_gap_and_a_double_application_are_found() -> None:
    records, snap = identified_world()
    terminate(records, snap)
    snap.identifications["alpha"][0] |= {"state": "REVOKED", "reason": "CONTRACT_TERMINATED"}
    snap.access[("alpha", "u1")] = False
    snap.events[0]["seq"] = 2
    snap.sequences["alpha"] = {"head_seq": 2, "acked_seq": 2}
    snap.inbox["alpha"] = [
        {"event_id": "e1", "seq": 2, "revoked": 1},
        {"event_id": "e0", "seq": 2, "revoked": 0},
    ]
    snap.cursors["alpha"] = 2
    found = invariants(records, snap)
    assert {"sequence_gap", "applied_twice", "applied_wrong_event"} <= found


def test_lost_writes_a_shared_code_and_a_pending_verification_are_found() -> None:
    records, snap = identified_world()
    records.append(op("create", operator="megafon", phone="+79210000001", contract_id="M1"))
    snap.bindings.append(
        {
            "operator": "megafon",
            "contract_id": "M0",
            "messenger_id": "beta",
            "identification_code": "CODE-1",
        }
    )
    snap.identifications["beta"] = [
        {
            "identification_id": "i2",
            "user_id": "u2",
            "state": "VERIFYING",
            "reason": "UNSPECIFIED",
            "operator_id": "megafon",
            "identification_code": None,
            "verification_deadline": EARLIER,
            "identified_at": None,
        }
    ]
    assert invariants(records, snap) == {
        "acked_write_lost",
        "duplicate_code",
        "verifying_past_window",
    }
    assert outstanding(snap) == ["beta: 1 VERIFYING"]


def test_a_revocation_without_a_termination_is_found() -> None:
    records, snap = identified_world()
    snap.identifications["alpha"][0] |= {"state": "REVOKED", "reason": "CONTRACT_TERMINATED"}
    snap.access[("alpha", "u1")] = False
    assert invariants(records, snap) == {"revoked_without_termination"}


@pytest.mark.parametrize("code", ["INTERNAL", "UNKNOWN"])
def test_an_answer_that_says_bug_is_a_violation(code: str) -> None:
    """A store out of reach, a lost commit or a killed peer is UNAVAILABLE; an INTERNAL or
    UNKNOWN answer is a violation whatever the state says."""
    records, snap = identified_world()
    failed = op("create", ok=None, operator="beeline", phone="+79030000002", contract_id="C2")
    failed.code = code
    records.append(failed)
    assert invariants(records, snap) == {"bug_answer"}


def test_unavailable_and_refusals_are_not_bug_answers() -> None:
    records, snap = identified_world()
    for code, ok in (("UNAVAILABLE", None), ("FAILED_PRECONDITION", False)):
        answer = op("terminate", ok=ok, operator="beeline", phone="+79030000001")
        answer.code = code
        records.append(answer)
    report = check(records, snap)
    assert report.violations == []
    assert report.counts["answers"] == len(records)
