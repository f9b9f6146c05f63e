"""The delivery policy's domain: one table of cases covering every rule and their precedence,
the index built from a snapshot and from the change log alike, and the order state machine."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from services.common.errors import InvalidInput
from services.messenger_gateway.policy.index import PolicyIndex
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
    RestrictionOrder,
    order_transition,
    validate_order_id,
    validate_pair_user,
)
from tests.messenger_gateway.policy_reference import ReferenceIndex

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


def changes_of(case: Case) -> list[PolicyChange]:
    return [
        PolicyChange(version=version, changed_at=NOW, kind=kind, **fields)
        for version, (kind, fields) in enumerate(BASE + case.changes, start=1)
    ]


# How the compact index is reached: changes left in its overlay, changes merged into its
# arrays, a snapshot loaded, and all three with 2-bit lookup keys (every id collides).
BUILDS = ("overlay", "merged", "loaded", "overlay-2bit", "merged-2bit", "loaded-2bit")


def built(case: Case, how: str) -> PolicyIndex:
    bits = 2 if how.endswith("2bit") else 64
    index = PolicyIndex(
        refuse_unaccepted_by_default=case.refuse_unaccepted_by_default, key_bits=bits
    )
    reference = ReferenceIndex(refuse_unaccepted_by_default=case.refuse_unaccepted_by_default)
    for change in changes_of(case):
        index.apply(change)
        reference.apply(change)
    if how.startswith("merged"):
        index.merge()
        assert index.overlay_size == 0
    elif how.startswith("loaded"):
        index.load(reference.snapshot())
    assert index.version == reference.version
    return index


@pytest.mark.parametrize("how", BUILDS)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_decision_table(case: Case, how: str) -> None:
    index = built(case, how)
    assert index.decide(case.sender, case.recipient, case.kind).reason is case.expected
    assert index.decide_by_rules(case.sender, case.recipient, case.kind).reason is case.expected


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


def random_changes(rng: random.Random, people: list[str], count: int) -> list[PolicyChange]:
    """A random change log over people (the last two never identify): identifications (and
    their loss), rules set and removed, policies, consents granted and revoked, orders in force
    and lifted, by user and by number; ids outside people now and then (senders that are not
    users)."""
    phones = {p: f"+7903000{i:04d}" for i, p in enumerate(people)}
    phones[people[0]] = "not-e164"  # kept as it is
    entries: list[tuple[ChangeKind, dict[str, str]]] = []
    for _ in range(count):
        a, b = rng.sample(people, 2)
        if rng.random() < 0.1:
            b = f"stranger-{rng.randrange(5)}"
        roll = rng.random()
        if roll < 0.25 and a not in people[-2:]:
            number = phones[a] if rng.random() < 0.8 else phones[rng.choice(people)]
            state = rng.choice(["IDENTIFIED", "IDENTIFIED", "REVOKED", "AWAITING_CODE"])
            entries.append(ident(a, state, number))
        elif roll < 0.5:
            entries.append(rule(a, b, rng.choice(["ACCEPTED", "REFUSED", "NONE"])))
        elif roll < 0.6:
            entries.append(unaccepted(a, rng.choice(["ALLOW", "REFUSE", "DEFAULT"])))
        elif roll < 0.85:
            entries.append(consent(a, b, rng.choice(["GRANTED", "REVOKED"])))
        else:
            by_phone = rng.random() < 0.5
            entries.append(
                order(
                    f"o{rng.randrange(4)}",
                    user="" if by_phone else a,
                    phone=phones[a] if by_phone else "",
                    scope=rng.choice(["ALL_MESSAGES", "AUTOMATED"]),
                    state=rng.choice(["IN_FORCE", "IN_FORCE", "LIFTED", "RECEIVED"]),
                )
            )
    return [
        PolicyChange(version=version, changed_at=NOW, kind=kind, **fields)
        for version, (kind, fields) in enumerate(entries, start=1)
    ]


def assert_same_answers(
    index: PolicyIndex, reference: ReferenceIndex, people: list[str], context: object
) -> None:
    """Every decision of the compact index (fast, by the rules, and in a batch over the arrays)
    is the reference's, and so is every fact a caller reads."""
    for sender in people:
        assert index.is_known(sender) == reference.is_known(sender), (sender, context)
        assert index.identified_number(sender) == reference.identified_number(sender), context
        for recipient in people:
            for kind in MessageKind:
                expected = reference.decide(sender, recipient, kind)
                assert index.decide(sender, recipient, kind) is expected, (
                    sender,
                    recipient,
                    kind,
                    context,
                )
                assert index.decide_by_rules(sender, recipient, kind) is expected
    batch = [(s, r, k) for s in people for r in people for k in MessageKind]
    assert index.decide_batch(batch) == [reference.decide(*pair) for pair in batch], context
    assert index.users == len(reference.users)
    assert index.orders_in_force == len(reference.orders)


def test_the_fast_decision_agrees_with_the_rules_on_random_indexes() -> None:
    """decide() is decide_by_rules() written out: on random users, preferences and orders,
    every pair and kind gets the same answer from both (and from the reference), with the
    changes in the overlay, then merged into the arrays, then loaded from a snapshot."""
    rng = random.Random(1279)
    people = [f"p{i}" for i in range(12)]
    for run in range(150):
        default = rng.random() < 0.3
        index = PolicyIndex(refuse_unaccepted_by_default=default)
        reference = ReferenceIndex(refuse_unaccepted_by_default=default)
        for change in random_changes(rng, people, 40):
            index.apply(change)
            reference.apply(change)
        assert index.overlay_size > 0
        assert_same_answers(index, reference, people, ("overlay", run))
        index.merge()
        assert index.overlay_size == 0
        assert_same_answers(index, reference, people, ("merged", run))
        loaded = PolicyIndex(refuse_unaccepted_by_default=default)
        loaded.load(reference.snapshot())
        assert_same_answers(loaded, reference, people, ("loaded", run))


@pytest.mark.parametrize("key_bits", [64, 3, 1])
def test_random_change_sequences_give_the_reference_decisions(key_bits: int) -> None:
    """Model-based: long random change logs applied to the compact index (loaded from a
    snapshot part way, its overlay merged every few changes, deletions included) and to the
    plain reference: after every step, the same decisions for every pair and kind. With 3 or
    1 bits of lookup key, ids collide all the time and the side table keeps them apart."""
    rng = random.Random(1801 + key_bits)
    people = [f"u{i}" for i in range(10)] + ["é-user", "ünïcode"]
    for run in range(12):
        default = rng.random() < 0.5
        index = PolicyIndex(
            refuse_unaccepted_by_default=default,
            key_bits=key_bits,
            merge_threshold=rng.choice([1, 3, 8, 1 << 16]),
        )
        reference = ReferenceIndex(refuse_unaccepted_by_default=default)
        changes = random_changes(rng, people, 120)
        load_at = rng.randrange(len(changes))
        for step, change in enumerate(changes):
            index.apply(change)
            reference.apply(change)
            if step == load_at:
                index.load(reference.snapshot())
            elif rng.random() < 0.05:
                index.merge()
            if step % 6 == 0 or step == len(changes) - 1:
                assert_same_answers(index, reference, people, (run, step, change))
        assert index.version == reference.version


def test_ids_that_share_a_lookup_key_are_kept_apart() -> None:
    """With 1-bit keys, every second id shares a key with another: the collisions are found
    (load and apply), kept in the side table, and no decision mixes two ids up."""
    people = [f"c{i}" for i in range(16)]
    reference = ReferenceIndex()
    for i, p in enumerate(people):
        identified = i % 2 == 0
        reference.apply(
            PolicyChange(
                version=i + 1,
                changed_at=NOW,
                kind=ChangeKind.IDENTIFICATION,
                user_id=p,
                value="IDENTIFIED" if identified else "REVOKED",
                phone_number=f"+7903111{i:04d}",
            )
        )
    reference.apply(PolicyChange(17, NOW, ChangeKind.SENDER_RULE, "c0", "c2", value="REFUSED"))
    reference.apply(PolicyChange(18, NOW, ChangeKind.UNACCEPTED_POLICY, "c0", value="REFUSE"))
    reference.apply(PolicyChange(19, NOW, ChangeKind.SENDER_RULE, "c0", "c4", value="ACCEPTED"))
    index = PolicyIndex(key_bits=1)
    index.load(reference.snapshot())
    assert index.key_collisions() >= len(people) - 2  # two keys: all but one per key collide
    assert_same_answers(index, reference, people, "loaded")
    late = PolicyChange(
        20, NOW, ChangeKind.IDENTIFICATION, "late", value="IDENTIFIED", phone_number="+79031119999"
    )
    index.apply(late)
    reference.apply(late)
    index.merge()
    assert_same_answers(index, reference, [*people, "late", "never-seen"], "merged")
    assert index.decide("c2", "c0", PERSONAL).reason is R.RECIPIENT_REFUSED_SENDER
    assert index.decide("c4", "c0", PERSONAL).reason is R.ALLOWED
    assert index.decide("c6", "c0", PERSONAL).reason is R.SENDER_NOT_ACCEPTED
    assert index.decide("c1", "c0", PERSONAL).reason is R.SENDER_NOT_IDENTIFIED


def test_a_number_not_in_e164_is_kept_as_it_is() -> None:
    index = PolicyIndex()
    index.apply(
        PolicyChange(
            1, NOW, ChangeKind.IDENTIFICATION, "a", value="IDENTIFIED", phone_number="+79031230001"
        )
    )
    index.apply(
        PolicyChange(
            2, NOW, ChangeKind.IDENTIFICATION, "b", value="IDENTIFIED", phone_number="0800 odd"
        )
    )
    index.merge()
    assert index.identified_number("a") == "+79031230001"
    assert index.identified_number("b") == "0800 odd"
    index.apply(
        PolicyChange(
            3, NOW, ChangeKind.IDENTIFICATION, "b", value="REVOKED", phone_number="0800 odd"
        )
    )
    assert index.identified_number("b") is None
    assert index.is_known("b") and not index.is_identified("b")


def test_an_empty_index_knows_nobody() -> None:
    for index in (PolicyIndex(), PolicyIndex(key_bits=3)):
        assert index.decide("s", "r", PERSONAL).reason is R.SENDER_NOT_IDENTIFIED
        batch = [("s", "r", PERSONAL)] * 40
        assert {d.reason for d in index.decide_batch(batch)} == {R.SENDER_NOT_IDENTIFIED}
        assert not index.is_known("s") and index.identified_number("s") is None
        assert index.users == 0 and index.overlay_size == 0
