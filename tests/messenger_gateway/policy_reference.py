"""A plain reference of the policy index for the tests: the same facts in dicts and sets of
strings, changed by the same change-log entries, answering through the rules
(model.decide_by_rules), and able to say its state as the store's Snapshot would."""

from __future__ import annotations

from services.messenger_gateway.policy.model import (
    ChangeKind,
    Decision,
    MessageKind,
    OrderScope,
    OrderTarget,
    PolicyChange,
    Snapshot,
    decide_by_rules,
)


class ReferenceIndex:
    def __init__(self, *, refuse_unaccepted_by_default: bool = False) -> None:
        self.refuse_unaccepted_by_default = refuse_unaccepted_by_default
        self.version = 0
        self.users: dict[str, str | None] = {}  # user -> number while IDENTIFIED, else None
        self.rules: dict[tuple[str, str], str] = {}  # (recipient, sender) -> ACCEPTED/REFUSED
        self.policies: dict[str, str] = {}  # explicit ALLOW/REFUSE only
        self.consents: set[tuple[str, str]] = set()
        self.orders: dict[str, tuple[OrderTarget, str, OrderScope]] = {}

    def apply(self, change: PolicyChange) -> None:
        pair = (change.user_id, change.sender_id)
        if change.kind is ChangeKind.IDENTIFICATION:
            identified = change.value == "IDENTIFIED"
            self.users[change.user_id] = change.phone_number if identified else None
        elif change.kind is ChangeKind.SENDER_RULE:
            if change.value == "NONE":
                self.rules.pop(pair, None)
            else:
                self.rules[pair] = change.value
        elif change.kind is ChangeKind.UNACCEPTED_POLICY:
            if change.value == "DEFAULT":
                self.policies.pop(change.user_id, None)
            else:
                self.policies[change.user_id] = change.value
        elif change.kind is ChangeKind.AUTOMATED_CONSENT:
            if change.value == "GRANTED":
                self.consents.add(pair)
            else:
                self.consents.discard(pair)
        elif change.kind is ChangeKind.RESTRICTION_ORDER:
            if change.value == "IN_FORCE":
                target = OrderTarget.PHONE if change.phone_number else OrderTarget.USER
                value = change.phone_number or change.user_id
                self.orders[change.order_id] = (target, value, OrderScope(change.scope))
            else:
                self.orders.pop(change.order_id, None)
        self.version = change.version

    def snapshot(self) -> Snapshot:
        """The state a store would hold after the same changes, as its snapshot."""
        return Snapshot(
            version=self.version,
            users=[
                (u, p or "", "IDENTIFIED" if p is not None else "REVOKED")
                for u, p in self.users.items()
            ],
            sender_rules=[(r, s, v) for (r, s), v in self.rules.items()],
            unaccepted=list(self.policies.items()),
            consents=sorted(self.consents),
            orders=[(o, t.value, v, s.value) for o, (t, v, s) in self.orders.items()],
        )

    # --- what the rules read -----------------------------------------------------------------

    def is_identified(self, user_id: str) -> bool:
        return self.users.get(user_id) is not None

    def identified_number(self, user_id: str) -> str | None:
        return self.users.get(user_id)

    def is_known(self, user_id: str) -> bool:
        return user_id in self.users

    def is_restricted(self, user_id: str, kind: MessageKind) -> bool:
        phone = self.users.get(user_id)
        for target, value, scope in self.orders.values():
            named = value == user_id if target is OrderTarget.USER else value == phone
            if named and (kind is MessageKind.AUTOMATED or scope is OrderScope.ALL_MESSAGES):
                return True
        return False

    def refused(self, recipient: str, sender: str) -> bool:
        return self.rules.get((recipient, sender)) == "REFUSED"

    def accepted(self, recipient: str, sender: str) -> bool:
        return self.rules.get((recipient, sender)) == "ACCEPTED"

    def refuses_unaccepted(self, recipient: str) -> bool:
        policy = self.policies.get(recipient)
        return self.refuse_unaccepted_by_default if policy is None else policy == "REFUSE"

    def consented(self, recipient: str, sender: str) -> bool:
        return (recipient, sender) in self.consents

    def decide(self, sender: str, recipient: str, kind: MessageKind) -> Decision:
        return decide_by_rules(self, sender, recipient, kind)
