"""`idmesh policy ...` against a running mesh: the delivery-policy walkthrough of docs/policy.md."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.cli.conftest import fresh_number

pytestmark = pytest.mark.mesh


def identified_user(idmesh: Any) -> tuple[str, str]:
    user, phone = f"pol-{uuid.uuid4().hex[:8]}", fresh_number()
    created = idmesh("registry", "create", "-o", "beeline", "-p", phone, "-c", f"CLI-{user}")
    assert created.code == 0, created.err
    started = idmesh("identify", "start", "-m", "alpha", "-u", user, "-p", phone, "--json")
    assert started.code == 0, started.err
    ident_id = started.json()["identification"]["identification_id"]
    confirmed = idmesh("identify", "confirm", "-m", "alpha", ident_id)
    assert "IDENTIFICATION_STATE_IDENTIFIED" in confirmed.out, confirmed.out + confirmed.err
    return user, phone


def reason(idmesh: Any, sender: str, recipient: str, kind: str = "personal") -> tuple[int, str]:
    result = idmesh(
        "policy", "check", "-m", "alpha", "--from", sender, "--to", recipient, "--kind", kind,
        "--json",
    )  # fmt: skip
    assert result.code in (0, 3), result.err
    return result.code, result.json()["reason"].removeprefix("DELIVERY_REASON_")


def test_the_policy_walkthrough(idmesh: Any, tmp_path: Path) -> None:
    ann, ann_phone = identified_user(idmesh)
    bob, _ = identified_user(idmesh)
    assert reason(idmesh, ann, bob) == (0, "ALLOWED")
    assert reason(idmesh, ann, "zoe-nobody") == (3, "RECIPIENT_UNKNOWN")

    assert idmesh("policy", "refuse", "-m", "alpha", "-u", bob, "--sender", ann).code == 0
    assert reason(idmesh, ann, bob) == (3, "RECIPIENT_REFUSED_SENDER")
    assert reason(idmesh, ann, bob, "state") == (0, "ALLOWED")
    assert idmesh("policy", "clear", "-m", "alpha", "-u", bob, "--sender", ann).code == 0

    assert idmesh("policy", "unaccepted", "-m", "alpha", "-u", bob, "refuse").code == 0
    assert reason(idmesh, ann, bob) == (3, "SENDER_NOT_ACCEPTED")
    assert idmesh("policy", "accept", "-m", "alpha", "-u", bob, "--sender", ann).code == 0
    assert reason(idmesh, ann, bob) == (0, "ALLOWED")

    assert reason(idmesh, ann, bob, "automated") == (3, "NO_AUTOMATED_CONSENT")
    assert idmesh("policy", "consent", "-m", "alpha", "-u", bob, "--sender", ann, "grant").code == 0
    assert reason(idmesh, ann, bob, "automated") == (0, "ALLOWED")
    shown = idmesh("policy", "show", "-m", "alpha", "-u", bob, "--json").json()
    assert shown["unaccepted_policy"] == "UNACCEPTED_SENDER_POLICY_REFUSE"
    assert [r["rule"] for r in shown["sender_rules"]] == ["SENDER_RULE_ACCEPTED"]
    assert shown["automated_consents"][0]["consent"] == "AUTOMATED_CONSENT_STATE_GRANTED"

    order_id = f"RKN-{uuid.uuid4().hex[:6]}"
    held = idmesh(
        "policy", "order", "record", "-m", "alpha", order_id, "--phone", ann_phone, "--hold",
        "--json",
    )  # fmt: skip
    assert held.code == 0, held.err
    assert held.json()["order"]["state"] == "RESTRICTION_ORDER_STATE_RECEIVED"
    assert reason(idmesh, ann, bob) == (0, "ALLOWED")
    assert idmesh("policy", "order", "enforce", "-m", "alpha", order_id).code == 0
    assert reason(idmesh, ann, bob) == (3, "SENDER_RESTRICTED")
    listed = idmesh("policy", "order", "list", "-m", "alpha", "--state", "in-force", "--json")
    assert order_id in [o["order_id"] for o in listed.json()["orders"]]
    lifted = idmesh("policy", "order", "lift", "-m", "alpha", order_id, "--reason", "withdrawn")
    assert lifted.code == 0, lifted.err
    assert reason(idmesh, ann, bob) == (0, "ALLOWED")
    audit = idmesh("policy", "order", "audit", "-m", "alpha", order_id, "--json").json()
    assert [r["action"] for r in audit["records"]] == ["RECORDED", "ENFORCED", "LIFTED"]
    assert ann_phone not in str(audit)  # masked

    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"sender_id,recipient_id,kind\n{ann},{bob},personal\n{bob},{ann},automated\n")
    batch = idmesh("policy", "check-batch", "-m", "alpha", str(pairs))
    assert batch.code == 3, batch.err
    assert [line.split("\t")[3] for line in batch.out.splitlines()] == [
        "DELIVERY_REASON_ALLOWED",
        "DELIVERY_REASON_NO_AUTOMATED_CONSENT",
    ]

    watched = idmesh("policy", "watch", "-m", "alpha", "--after", "0", "--limit", "1", "--json")
    assert watched.code == 0, watched.err
    assert [change["version"] for change in json.loads(watched.out)] == ["1"]  # one document

    bad = idmesh("policy", "refuse", "-m", "alpha", "-u", "zoe-nobody", "--sender", ann)
    assert bad.code == 1 and bad.err.startswith("error: NOT_FOUND"), bad.err
