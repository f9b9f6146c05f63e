"""The invariants, checked over the history and the quiesced mesh's state.

Each check counts what it looked at and reports a violation as one line naming the invariant,
the messenger, user, contract or event, never a full phone number or a code.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from tools.chaos.history import Record
from tools.chaos.schedule import MESSENGERS
from tools.chaos.state import Row, Snapshot

# After the client saw an identification in a final state, where it may stand now.
LATER = {
    "IDENTIFICATION_STATE_IDENTIFIED": {"IDENTIFIED", "REVOKED"},
    "IDENTIFICATION_STATE_NOT_COMPLETED": {"NOT_COMPLETED"},
    "IDENTIFICATION_STATE_REVOKED": {"REVOKED"},
}
ENDS = ("terminate", "port_out")
# Answers that say "a bug": never the right answer to a fault (an unreachable store, a lost
# commit, a killed peer are UNAVAILABLE; bad input its own code).
BUG_ANSWERS = ("INTERNAL", "UNKNOWN")


@dataclass
class Report:
    counts: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)

    def fail(self, invariant: str, message: str) -> None:
        self.violations.append(f"{invariant}: {message}")


def check(records: Sequence[Record], snap: Snapshot) -> Report:
    report = Report()
    _answers(records, report)
    by_code = _codes(snap, report)
    _terminations(records, snap, by_code, report)
    _sequences(snap, report)
    _windows(snap, report)
    _identified(snap, by_code, report)
    _writes(records, snap, by_code, report)
    return report


def _answers(records: Sequence[Record], report: Report) -> None:
    """No request was answered INTERNAL or UNKNOWN."""
    for r in records:
        if r.kind != "op":
            continue
        report.counts["answers"] += 1
        if r.code in BUG_ANSWERS:
            report.fail(
                "bug_answer",
                f"round {r.round}: {r.name} (attempt {r.args.get('attempt')}) answered {r.code}",
            )


def _short(code: str | None) -> str:
    """A code named in a report: its first characters only."""
    return f"{(code or '')[:6]}..."


def _codes(snap: Snapshot, report: Report) -> dict[str, Row]:
    """No two bindings share a code (across both registries)."""
    by_code: dict[str, Row] = {}
    for b in snap.bindings:
        report.counts["bindings"] += 1
        code = b["identification_code"]
        if code in by_code:
            other = by_code[code]
            report.fail(
                "duplicate_code",
                f"{b['operator']}/{b['contract_id']}/{b['messenger_id']} and "
                f"{other['operator']}/{other['contract_id']}/{other['messenger_id']} share code "
                f"{_short(code)}",
            )
        by_code.setdefault(code, b)
    return by_code


def _terminations(
    records: Sequence[Record], snap: Snapshot, by_code: dict[str, Row], report: Report
) -> None:
    """Every acknowledged termination (or port-out) of a contract bound to messenger M: the
    contract is terminated in the store, M received and applied its notice, and no user of M
    is allowed to send on that binding's code."""
    inbox_ids = {m: {r["event_id"] for r in snap.inbox.get(m, [])} for m in MESSENGERS}
    event_ids = {
        (e["messenger_id"], e["operator_id"], e["identification_code"]): e["event_id"]
        for e in snap.events
    }
    holders: dict[tuple[str, str, str], list[tuple[str, Row]]] = defaultdict(list)
    for m in MESSENGERS:
        for user, row in snap.current(m).items():
            holders[(m, row["operator_id"], row["identification_code"])].append((user, row))
    for r in records:
        if r.kind != "op" or r.name not in ENDS or r.ok is not True:
            continue
        report.counts["terminations_acked"] += 1
        operator, contract_id = r.args["operator"], r.result["contract_id"]
        contract = snap.contracts.get((operator, contract_id))
        if contract is None or contract["state"] != "terminated":
            report.fail(
                "acked_write_lost",
                f"round {r.round}: {r.name} of {operator}/{contract_id} was acknowledged but the "
                f"contract is {contract and contract['state']}",
            )
        for messenger, code in r.result["bindings"]:
            report.counts["terminated_bindings"] += 1
            key = (messenger, operator, code)
            if key not in event_ids:
                report.fail(
                    "notice_lost",
                    f"round {r.round}: no notice for {messenger} of {operator}/{contract_id}",
                )
            elif event_ids[key] not in inbox_ids.get(messenger, set()):
                report.fail(
                    "notice_not_applied",
                    f"round {r.round}: {messenger} never applied the notice of "
                    f"{operator}/{contract_id} (event {event_ids[key]})",
                )
            for user, row in holders.get(key, []):
                allowed = snap.access.get((messenger, user))
                if row["state"] == "IDENTIFIED" or allowed:
                    report.fail(
                        "termination_not_enforced",
                        f"round {r.round}: {operator}/{contract_id} was terminated (acknowledged) "
                        f"but {messenger} user {user} is {row['state']} on its code "
                        f"(identification {row['identification_id']}, CheckAccess allowed="
                        f"{allowed})",
                    )


def _sequences(snap: Snapshot, report: Report) -> None:
    """Per messenger: the notifier's sequence is 1..head without gaps, all acknowledged; the
    gateway applied each event exactly once, at the notifier's seq, and its cursor is the
    head; every outbox notice was published and reached the notifier once, and nothing else
    did."""
    outbox = {r["event_id"]: r for r in snap.outbox}
    for r in snap.outbox:
        report.counts["outbox_notices"] += 1
        if r["published_at"] is None:
            report.fail("notice_unpublished", f"{r['operator']} event {r['event_id']}")
    seen: set[str] = set()
    for m in MESSENGERS:
        events = [e for e in snap.events if e["messenger_id"] == m]
        seqs = [int(e["seq"]) for e in events]
        head = int(snap.sequences.get(m, {}).get("head_seq", 0))
        acked = int(snap.sequences.get(m, {}).get("acked_seq", 0))
        report.counts["notices"] += len(events)
        if seqs != list(range(1, len(seqs) + 1)) or head != len(seqs):
            gaps = sorted(set(range(1, head + 1)) - set(seqs))[:10]
            report.fail("sequence_gap", f"{m}: head {head}, {len(seqs)} events, missing {gaps}")
        if acked != head:
            report.fail("not_acknowledged", f"{m}: acked {acked} of head {head}")
        if snap.delivery.get(m, (head, acked)) != (head, acked):
            report.fail(
                "status_disagrees",
                f"{m}: GetDeliveryStatus says {snap.delivery[m]}, the store ({head}, {acked})",
            )
        by_id = {e["event_id"]: int(e["seq"]) for e in events}
        for e in events:
            source = outbox.get(e["event_id"])
            if e["event_id"] in seen or source is None or source["messenger_id"] != m:
                report.fail("phantom_notice", f"{m}: seq {e['seq']} event {e['event_id']}")
            seen.add(e["event_id"])
        inbox = snap.inbox.get(m, [])
        applied = Counter(int(row["seq"]) for row in inbox)
        twice = sorted(seq for seq, n in applied.items() if n > 1)
        if twice:
            report.fail("applied_twice", f"{m}: seqs {twice[:10]} applied more than once")
        for row in inbox:
            if by_id.get(row["event_id"]) != int(row["seq"]):
                report.fail(
                    "applied_wrong_event",
                    f"{m}: inbox seq {row['seq']} event {row['event_id']} is not the notifier's",
                )
        missing = sorted(set(by_id) - {row["event_id"] for row in inbox})
        if missing:
            report.fail("notice_not_applied", f"{m}: {len(missing)} events, e.g. {missing[:3]}")
        if snap.cursors.get(m, 0) != head:
            report.fail("cursor_behind", f"{m}: cursor {snap.cursors.get(m)} head {head}")
    for event_id, r in outbox.items():
        if r["published_at"] is not None and event_id not in seen:
            report.fail("notice_lost", f"{r['operator']} event {event_id} for {r['messenger_id']}")


def _windows(snap: Snapshot, report: Report) -> None:
    """Nothing VERIFYING once the mesh is quiet, and no answer recorded after its window."""
    for m in MESSENGERS:
        for row in snap.identifications.get(m, []):
            deadline = row["verification_deadline"]
            if deadline is None:
                continue
            report.counts["verifications"] += 1
            if row["state"] == "VERIFYING":
                report.fail(
                    "verifying_past_window",
                    f"{m} identification {row['identification_id']} still VERIFYING "
                    f"(deadline {deadline}, checked at {snap.taken_at.isoformat()})",
                )
            identified = row["identified_at"]
            if identified is not None and identified > deadline:  # ISO text in UTC sorts
                report.fail(
                    "answer_after_window",
                    f"{m} identification {row['identification_id']} IDENTIFIED at {identified}, "
                    f"after its deadline {deadline}",
                )


def _identified(snap: Snapshot, by_code: dict[str, Row], report: Report) -> None:
    """Every user allowed to send is IDENTIFIED on a binding of an active contract of the
    operator that answered; CheckAccess agrees with the store."""
    for m in MESSENGERS:
        for user, row in snap.current(m).items():
            report.counts["users"] += 1
            identified = row["state"] == "IDENTIFIED"
            allowed = snap.access.get((m, user))
            if allowed is not None and allowed != identified:
                report.fail(
                    "access_disagrees",
                    f"{m} user {user}: CheckAccess allowed={allowed}, stored {row['state']}",
                )
            if not identified:
                continue
            report.counts["identified_users"] += 1
            binding = by_code.get(row["identification_code"] or "")
            if binding is None or (binding["operator"], binding["messenger_id"]) != (
                row["operator_id"],
                m,
            ):
                report.fail(
                    "identified_without_binding",
                    f"{m} user {user} IDENTIFIED by {row['operator_id']} with a code that is no "
                    f"binding of {m} there ({_short(row['identification_code'])})",
                )
                continue
            contract = snap.contracts[(binding["operator"], binding["contract_id"])]
            if contract["state"] != "active":
                report.fail(
                    "identified_on_terminated_contract",
                    f"{m} user {user} (identification {row['identification_id']}) IDENTIFIED on "
                    f"{binding['operator']}/{binding['contract_id']}, terminated at "
                    f"{contract['terminated_at']}",
                )


def _writes(
    records: Sequence[Record], snap: Snapshot, by_code: dict[str, Row], report: Report
) -> None:
    """Every acknowledged write survived: contracts created, identifications started, final
    states the client saw (an IDENTIFIED one may since have been revoked, but only by the end
    of its contract or by the user's new identification)."""
    rows: dict[str, tuple[str, Row]] = {}
    for m in MESSENGERS:
        for row in snap.identifications.get(m, []):
            rows[row["identification_id"]] = (m, row)
    seen: dict[str, str] = {}
    for r in records:
        if r.kind != "op" or r.ok is not True:
            continue
        if r.name == "create":
            report.counts["creates_acked"] += 1
            contract = snap.contracts.get((r.args["operator"], r.args["contract_id"]))
            if contract is None or contract["phone_number"] != r.args["phone"]:
                report.fail(
                    "acked_write_lost",
                    f"round {r.round}: contract {r.args['operator']}/{r.args['contract_id']} was "
                    "acknowledged but is not stored",
                )
        elif r.name in ("start", "change_number"):
            report.counts["starts_acked"] += 1
            if r.result["identification_id"] not in rows:
                report.fail(
                    "acked_write_lost",
                    f"round {r.round}: identification {r.result['identification_id']} of "
                    f"{r.args['messenger']} user {r.args['user']} was acknowledged but is gone",
                )
        if r.name in ("confirm", "get") and r.result.get("state") in LATER:
            seen[r.result["identification_id"]] = r.result["state"]
    for identification_id, state in seen.items():
        report.counts["outcomes_seen"] += 1
        m, row = rows.get(identification_id, ("?", {}))
        if row.get("state") not in LATER[state]:
            report.fail(
                "acked_write_lost",
                f"identification {identification_id} ({m}) was seen {state} and is now "
                f"{row.get('state')}",
            )
            continue
        if state != "IDENTIFICATION_STATE_IDENTIFIED":
            continue
        binding = by_code.get(row["identification_code"] or "")
        if binding is None:
            report.fail(
                "acked_write_lost",
                f"identification {identification_id} ({m}) was seen IDENTIFIED but its code is "
                "no binding at the operator",
            )
            continue
        if row["state"] == "REVOKED" and row["reason"] in ("CONTRACT_TERMINATED", "PORTED_OUT"):
            contract = snap.contracts[(binding["operator"], binding["contract_id"])]
            if contract["state"] == "active":
                report.fail(
                    "revoked_without_termination",
                    f"identification {identification_id} ({m}) REVOKED {row['reason']} but "
                    f"{binding['operator']}/{binding['contract_id']} is active",
                )


def summary(report: Report) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(report.counts.items()))


def group(violations: Sequence[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for v in violations:
        out[v.split(":", 1)[0]].append(v)
    return out
