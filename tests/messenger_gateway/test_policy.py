"""The delivery policy's domain: one table of cases covering every rule and their precedence,
the index built from a snapshot and from the change log alike, and the order state machine."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from services.common.errors import InvalidInput
from services.messenger_gateway.policy.model import (
    RULES,
    ChangeKind,
    DeliveryReason,
    MessageKind,
    OrderEvent,
    OrderScope,
    OrderState,
    OrderTarget,
    OrderWrongState,
    PolicyChange,
    PolicyIndex,
    RestrictionOrder,
    Snapshot,
    order_transition,
    validate_order_id,
    validate_pair_user,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)
S_PHONE, R_PHONE, N_PHONE = "+79031230001", "+79031230002", "+79031230003"

PERSONAL, AUTOMATED, STATE = MessageKind.PERSONAL, MessageKind.AUTOMATED, MessageKind.STATE_MAILING
R = DeliveryReason


def ident(user: str, state: str, phone: str) -> tuple[ChangeKind, dict[str, str]]:
    return ChangeKind.IDENTIFICATION, {"user_id": user, "value": state, "phone_number": phone}


def rule(recipient: str, sender: str, value: str) -> tuple[ChangeKind, dict[str, str]]:
    return ChangeKind.SENDER_RULE, {"user_id": recipient, "sender_id": sender, "value": value}


def unaccepted(user: str, value: str) -> tuple[ChangeKind, dict[str, str]]:
    return ChangeKind.UNACCEPTED_POLICY, {"user_id": user, "value": value}


def consent(recipient: str, sender: str, value: str) -> tuple[ChangeKind, dict[str, str]]:
    return ChangeKind.AUTOMATED_CONSENT, {"user_id": recipient, "sender_id": sender, "value": value}


def order(
    order_id: str, *, user: str = "", phone: str = "", scope: str = "ALL_MESSAGES", state: str
) -> tuple[ChangeKind, dict[str, str]]:
    return ChangeKind.RESTRICTION_ORDER, {
        "order_id": order_id,
        "user_id": user,
        "phone_number": phone,
        "scope": scope,
        "value": state,
    }


# s: identified sender; r: identified recipient; n: a user whose identification was revoked;
# anyone else is unknown to the gateway.
BASE = [
    ident("s", "IDENTIFIED", S_PHONE),
    ident("r", "IDENTIFIED", R_PHONE),
    ident("n", "IDENTIFIED", N_PHONE),
    ident("n", "REVOKED", N_PHONE),
]


@dataclass(frozen=True)
class Case:
    name: str
    changes: list[tuple[ChangeKind, dict[str, str]]]
    sender: str
    recipient: str
    kind: MessageKind
    expected: DeliveryReason
    refuse_unaccepted_by_default: bool = False


CASES = [
    # nothing refuses
    Case("personal allowed by default", [], "s", "r", PERSONAL, R.ALLOWED),
    Case("state mailing allowed", [], "s", "r", STATE, R.ALLOWED),
    Case("automated with consent", [consent("r", "s", "GRANTED")], "s", "r", AUTOMATED, R.ALLOWED),
    Case("a recipient need not be identified", [], "s", "n", PERSONAL, R.ALLOWED),
    # 1 sender not identified
    Case("revoked sender", [], "n", "r", PERSONAL, R.SENDER_NOT_IDENTIFIED),
    Case("unknown sender", [], "x", "r", STATE, R.SENDER_NOT_IDENTIFIED),
    Case(
        "sender identified again later",
        [ident("n", "IDENTIFIED", N_PHONE)],
        "n",
        "r",
        PERSONAL,
        R.ALLOWED,
    ),
    Case(
        "1 before 2: not identified and restricted",
        [order("o1", user="n", state="IN_FORCE")],
        "n",
        "r",
        PERSONAL,
        R.SENDER_NOT_IDENTIFIED,
    ),
    Case("1 before 3: unknown recipient too", [], "n", "x", PERSONAL, R.SENDER_NOT_IDENTIFIED),
    # 2 sender restricted
    Case(
        "order on the user",
        [order("o1", user="s", state="IN_FORCE")],
        "s",
        "r",
        PERSONAL,
        R.SENDER_RESTRICTED,
    ),
    Case(
        "order on the sender's number",
        [order("o1", phone=S_PHONE, state="IN_FORCE")],
        "s",
        "r",
        PERSONAL,
        R.SENDER_RESTRICTED,
    ),
    Case(
        "an order restricts state mailings too",
        [order("o1", user="s", state="IN_FORCE")],
        "s",
        "r",
        STATE,
        R.SENDER_RESTRICTED,
    ),
    Case(
        "scope AUTOMATED leaves personal messages",
        [order("o1", user="s", scope="AUTOMATED", state="IN_FORCE")],
        "s",
        "r",
        PERSONAL,
        R.ALLOWED,
    ),
    Case(
        "scope AUTOMATED restricts automated messages",
        [consent("r", "s", "GRANTED"), order("o1", user="s", scope="AUTOMATED", state="IN_FORCE")],
        "s",
        "r",
        AUTOMATED,
        R.SENDER_RESTRICTED,
    ),
    Case(
        "a held order is not in force",
        [order("o1", user="s", state="RECEIVED")],
        "s",
        "r",
        PERSONAL,
        R.ALLOWED,
    ),
    Case(
        "a lifted order no longer restricts",
        [order("o1", user="s", state="IN_FORCE"), order("o1", user="s", state="LIFTED")],
        "s",
        "r",
        PERSONAL,
        R.ALLOWED,
    ),
    Case(
        "lifting one of two orders leaves the other",
        [
            order("o1", user="s", state="IN_FORCE"),
            order("o2", phone=S_PHONE, state="IN_FORCE"),
            order("o1", user="s", state="LIFTED"),
        ],
        "s",
        "r",
        PERSONAL,
        R.SENDER_RESTRICTED,
    ),
    Case(
        "an order on a number follows the user who holds it",
        [order("o1", phone=N_PHONE, state="IN_FORCE"), ident("s", "IDENTIFIED", N_PHONE)],
        "s",
        "r",
        PERSONAL,
        R.SENDER_RESTRICTED,
    ),
    Case(
        "2 before 3: restricted and unknown recipient",
        [order("o1", user="s", state="IN_FORCE")],
        "s",
        "x",
        PERSONAL,
        R.SENDER_RESTRICTED,
    ),
    # 3 recipient unknown
    Case("unknown recipient", [], "s", "x", PERSONAL, R.RECIPIENT_UNKNOWN),
    Case("unknown recipient of a state mailing", [], "s", "x", STATE, R.RECIPIENT_UNKNOWN),
    # 4 recipient refused the sender
    Case("refused", [rule("r", "s", "REFUSED")], "s", "r", PERSONAL, R.RECIPIENT_REFUSED_SENDER),
    Case(
        "4 before 5: refused, consent granted",
        [rule("r", "s", "REFUSED"), consent("r", "s", "GRANTED")],
        "s",
        "r",
        AUTOMATED,
        R.RECIPIENT_REFUSED_SENDER,
    ),
    Case(
        "4 before 5: refused, no consent",
        [rule("r", "s", "REFUSED")],
        "s",
        "r",
        AUTOMATED,
        R.RECIPIENT_REFUSED_SENDER,
    ),
    Case(
        "4 before 6: refused and refuses unaccepted",
        [rule("r", "s", "REFUSED"), unaccepted("r", "REFUSE")],
        "s",
        "r",
        PERSONAL,
        R.RECIPIENT_REFUSED_SENDER,
    ),
    Case(
        "a refusal does not apply to state mailings",
        [rule("r", "s", "REFUSED"), unaccepted("r", "REFUSE")],
        "s",
        "r",
        STATE,
        R.ALLOWED,
    ),
    Case(
        "a rule removed (NONE)",
        [rule("r", "s", "REFUSED"), rule("r", "s", "NONE")],
        "s",
        "r",
        PERSONAL,
        R.ALLOWED,
    ),
    Case(
        "a refusal is per recipient",
        [rule("n", "s", "REFUSED")],
        "s",
        "r",
        PERSONAL,
        R.ALLOWED,
    ),
    # 5 no consent to automated messages
    Case("automated without consent", [], "s", "r", AUTOMATED, R.NO_AUTOMATED_CONSENT),
    Case(
        "consent revoked",
        [consent("r", "s", "GRANTED"), consent("r", "s", "REVOKED")],
        "s",
        "r",
        AUTOMATED,
        R.NO_AUTOMATED_CONSENT,
    ),
    Case(
        "acceptance is not consent to automated messages",
        [rule("r", "s", "ACCEPTED")],
        "s",
        "r",
        AUTOMATED,
        R.NO_AUTOMATED_CONSENT,
    ),
    Case(
        "5 only: automated with consent, recipient refuses unaccepted",
        [consent("r", "s", "GRANTED"), unaccepted("r", "REFUSE")],
        "s",
        "r",
        AUTOMATED,
        R.ALLOWED,
    ),
    # 6 sender not accepted
    Case(
        "refuses unaccepted senders",
        [unaccepted("r", "REFUSE")],
        "s",
        "r",
        PERSONAL,
        R.SENDER_NOT_ACCEPTED,
    ),
    Case(
        "an accepted sender passes",
        [unaccepted("r", "REFUSE"), rule("r", "s", "ACCEPTED")],
        "s",
        "r",
        PERSONAL,
        R.ALLOWED,
    ),
    Case(
        "the gateway's default refuses",
        [],
        "s",
        "r",
        PERSONAL,
        R.SENDER_NOT_ACCEPTED,
        refuse_unaccepted_by_default=True,
    ),
    Case(
        "the user's ALLOW overrides the default",
        [unaccepted("r", "ALLOW")],
        "s",
        "r",
        PERSONAL,
        R.ALLOWED,
        refuse_unaccepted_by_default=True,
    ),
    Case(
        "DEFAULT goes back to the gateway's default",
        [unaccepted("r", "ALLOW"), unaccepted("r", "DEFAULT")],
        "s",
        "r",
        PERSONAL,
        R.SENDER_NOT_ACCEPTED,
        refuse_unaccepted_by_default=True,
    ),
]


def index_from_log(case: Case) -> PolicyIndex:
    index = PolicyIndex(refuse_unaccepted_by_default=case.refuse_unaccepted_by_default)
    for version, (kind, fields) in enumerate(BASE + case.changes, start=1):
        index.apply(PolicyChange(version=version, changed_at=NOW, kind=kind, **fields))
    return index


def snapshot_of(index: PolicyIndex) -> Snapshot:
    """The state a store would hold after the same changes, as its snapshot."""
    users = [(u, p or "", "IDENTIFIED" if p else "REVOKED") for u, p in index._users.items()]
    rules = [(*k.split("\0"), "REFUSED" if v else "ACCEPTED") for k, v in index._rules.items()]
    policies = [(u, "REFUSE" if v else "ALLOW") for u, v in index._refuse_unaccepted.items()]
    consents = [tuple(k.split("\0")) for k in index._consents]
    orders = [(o, t.value, v, s.value) for o, (t, v, s) in index._orders.items()]
    return Snapshot(index.version, users, rules, policies, consents, orders)  # type: ignore[arg-type]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_decision_table(case: Case) -> None:
    index = index_from_log(case)
    assert index.decide(case.sender, case.recipient, case.kind).reason is case.expected
    assert index.decide_by_rules(case.sender, case.recipient, case.kind).reason is case.expected
    loaded = PolicyIndex(refuse_unaccepted_by_default=case.refuse_unaccepted_by_default)
    loaded.load(snapshot_of(index))
    assert loaded.decide(case.sender, case.recipient, case.kind).reason is case.expected
    assert loaded.version == index.version


def test_every_rule_is_covered_by_the_table() -> None:
    covered = {c.expected for c in CASES}
    assert covered == set(DeliveryReason)


def test_the_precedence_is_the_documented_one() -> None:
    assert [r.reason for r in RULES] == [
        R.SENDER_NOT_IDENTIFIED,
        R.SENDER_RESTRICTED,
        R.RECIPIENT_UNKNOWN,
        R.RECIPIENT_REFUSED_SENDER,
        R.NO_AUTOMATED_CONSENT,
        R.SENDER_NOT_ACCEPTED,
    ]
    state_rules = [r.reason for r in RULES if STATE in r.kinds]
    assert state_rules == [R.SENDER_NOT_IDENTIFIED, R.SENDER_RESTRICTED, R.RECIPIENT_UNKNOWN]


def test_the_docs_table_lists_the_rules_in_this_order() -> None:
    from pathlib import Path

    page = (Path(__file__).resolve().parents[2] / "docs" / "policy.md").read_text()
    positions = [page.index(f"`{r.reason.value}`") for r in RULES]
    assert positions == sorted(positions)


def _order(state: OrderState) -> RestrictionOrder:
    return RestrictionOrder("o1", OrderTarget.USER, "s", OrderScope.ALL_MESSAGES, state, NOW, NOW)


@pytest.mark.parametrize(
    ("state", "event", "expected"),
    [
        (OrderState.RECEIVED, OrderEvent.ENFORCE, OrderState.IN_FORCE),
        (OrderState.RECEIVED, OrderEvent.LIFT, OrderState.LIFTED),
        (OrderState.IN_FORCE, OrderEvent.LIFT, OrderState.LIFTED),
        (OrderState.IN_FORCE, OrderEvent.ENFORCE, None),
        (OrderState.LIFTED, OrderEvent.LIFT, None),
        (OrderState.LIFTED, OrderEvent.ENFORCE, None),
    ],
)
def test_order_state_machine(
    state: OrderState, event: OrderEvent, expected: OrderState | None
) -> None:
    if expected is None:
        with pytest.raises(OrderWrongState, match=f"is {state}"):
            order_transition(_order(state), event)
    else:
        assert order_transition(_order(state), event) is expected


@pytest.mark.parametrize(
    ("value", "field"), [("", "pairs[3].sender_id"), ("x" * 129, "recipient_id"), ("a\nb", "f")]
)
def test_bad_user_ids_are_refused_naming_the_field(value: str, field: str) -> None:
    with pytest.raises(InvalidInput, match=field.replace("[", r"\[").replace("]", r"\]")):
        validate_pair_user(value, field)


@pytest.mark.parametrize("value", ["", "x" * 65, "has space", "tab\t"])
def test_bad_order_ids_are_refused(value: str) -> None:
    with pytest.raises(InvalidInput, match="order_id"):
        validate_order_id(value)


def test_the_fast_decision_agrees_with_the_rules_on_random_indexes() -> None:
    """decide() is decide_by_rules() written out: on random users, preferences and orders,
    every pair and kind gets the same answer from both."""
    rng = random.Random(1279)
    people = [f"p{i}" for i in range(12)]
    phones = {p: f"+7903000{i:04d}" for i, p in enumerate(people)}
    for _ in range(200):
        index = PolicyIndex(refuse_unaccepted_by_default=rng.random() < 0.3)
        changes: list[tuple[ChangeKind, dict[str, str]]] = []
        for p in people[:-2]:  # the last two stay unknown
            state = rng.choice(["IDENTIFIED", "IDENTIFIED", "REVOKED", "AWAITING_CODE"])
            changes.append(ident(p, state, phones[p]))
        for _ in range(15):
            a, b = rng.sample(people, 2)
            changes.append(
                rng.choice(
                    [
                        rule(a, b, rng.choice(["ACCEPTED", "REFUSED", "NONE"])),
                        unaccepted(a, rng.choice(["ALLOW", "REFUSE", "DEFAULT"])),
                        consent(a, b, rng.choice(["GRANTED", "REVOKED"])),
                    ]
                )
            )
        for n in range(rng.randrange(3)):
            target = rng.choice(people)
            by_phone = rng.random() < 0.5
            changes.append(
                order(
                    f"o{n}",
                    user="" if by_phone else target,
                    phone=phones[target] if by_phone else "",
                    scope=rng.choice(["ALL_MESSAGES", "AUTOMATED"]),
                    state=rng.choice(["IN_FORCE", "IN_FORCE", "RECEIVED"]),
                )
            )
        for version, (kind, fields) in enumerate(changes, start=1):
            index.apply(PolicyChange(version=version, changed_at=NOW, kind=kind, **fields))
        for sender in people:
            for recipient in people:
                for message_kind in MessageKind:
                    assert index.decide(sender, recipient, message_kind) is index.decide_by_rules(
                        sender, recipient, message_kind
                    ), (sender, recipient, message_kind, changes)
