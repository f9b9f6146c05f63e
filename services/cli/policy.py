"""`idmesh policy ...`: the delivery policy of a messenger's gateway.

Users' preferences and decisions act as the messenger's front end; restriction orders
(`idmesh policy order ...`) as the messenger's admin. Registered by services/cli/main.py with
add_commands(sub, common, cli).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from types import ModuleType
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from idmesh.gateway.v1 import gateway_pb2

KINDS = {
    "personal": gateway_pb2.MESSAGE_KIND_PERSONAL,
    "automated": gateway_pb2.MESSAGE_KIND_AUTOMATED,
    "state": gateway_pb2.MESSAGE_KIND_STATE_MAILING,
}
RULES = {
    "accept": gateway_pb2.SENDER_RULE_ACCEPTED,
    "refuse": gateway_pb2.SENDER_RULE_REFUSED,
    "clear": gateway_pb2.SENDER_RULE_NONE,
}
POLICIES = {
    "allow": gateway_pb2.UNACCEPTED_SENDER_POLICY_ALLOW,
    "refuse": gateway_pb2.UNACCEPTED_SENDER_POLICY_REFUSE,
    "default": gateway_pb2.UNACCEPTED_SENDER_POLICY_DEFAULT,
}
CONSENTS = {
    "grant": gateway_pb2.AUTOMATED_CONSENT_STATE_GRANTED,
    "revoke": gateway_pb2.AUTOMATED_CONSENT_STATE_REVOKED,
}
SCOPES = {
    "all": gateway_pb2.RESTRICTION_SCOPE_ALL_MESSAGES,
    "automated": gateway_pb2.RESTRICTION_SCOPE_AUTOMATED,
}
STATES = {
    "received": gateway_pb2.RESTRICTION_ORDER_STATE_RECEIVED,
    "in-force": gateway_pb2.RESTRICTION_ORDER_STATE_IN_FORCE,
    "lifted": gateway_pb2.RESTRICTION_ORDER_STATE_LIFTED,
}
BATCH = 1_000  # pairs per CheckDeliveryBatch call from `policy check-batch`


class Commands:
    """The command handlers, over the CLI's own helpers (services.cli.main, passed in: the module
    running as the program, so that its CliError is the one it catches)."""

    def __init__(self, cli: ModuleType) -> None:
        self.cli = cli

    # --- preferences and decisions (the front end) ---------------------------------------

    async def rule(self, args: argparse.Namespace) -> int:
        channel, stub = self.cli._gateway(args)
        async with channel:
            reply = await stub.SetSenderRule(
                gateway_pb2.SetSenderRuleRequest(
                    user_id=args.user, sender_id=args.sender, rule=RULES[args.rule]
                )
            )
        self.cli._print(args, reply)
        return 0

    async def unaccepted(self, args: argparse.Namespace) -> int:
        channel, stub = self.cli._gateway(args)
        async with channel:
            reply = await stub.SetUnacceptedSenderPolicy(
                gateway_pb2.SetUnacceptedSenderPolicyRequest(
                    user_id=args.user, policy=POLICIES[args.policy]
                )
            )
        self.cli._print(args, reply)
        return 0

    async def consent(self, args: argparse.Namespace) -> int:
        channel, stub = self.cli._gateway(args)
        async with channel:
            reply = await stub.SetAutomatedConsent(
                gateway_pb2.SetAutomatedConsentRequest(
                    user_id=args.user, sender_id=args.sender, consent=CONSENTS[args.consent]
                )
            )
        self.cli._print(args, reply)
        return 0

    async def show(self, args: argparse.Namespace) -> int:
        channel, stub = self.cli._gateway(args)
        async with channel:
            reply = await stub.ListPreferences(
                gateway_pb2.ListPreferencesRequest(user_id=args.user)
            )
        self.cli._print(args, reply, with_defaults=True)
        return 0

    async def check(self, args: argparse.Namespace) -> int:
        channel, stub = self.cli._gateway(args)
        async with channel:
            reply = await stub.CheckDelivery(
                gateway_pb2.CheckDeliveryRequest(
                    sender_id=args.sender,
                    recipient_id=args.recipient,
                    kind=KINDS[args.kind],
                    min_version=args.min_version,
                )
            )
        self.cli._print(args, reply, with_defaults=True)
        return 0 if reply.allowed else 3

    def _pairs(self, path: Path) -> Iterator[tuple[int, gateway_pb2.DeliveryPair]]:
        """(line, pair) from a CSV with the header sender_id,recipient_id,kind."""
        opened = nullcontext(sys.stdin) if str(path) == "-" else self.cli._open_text(path)
        with opened as text:
            reader = csv.DictReader(text)
            missing = {"sender_id", "recipient_id", "kind"} - set(reader.fieldnames or ())
            if missing:
                raise self.cli.CliError(
                    f"{path}: the header must name sender_id, recipient_id, kind (missing "
                    f"{', '.join(sorted(missing))})"
                )
            for row in reader:
                kind = KINDS.get((row["kind"] or "").strip().lower())
                if kind is None:
                    raise self.cli.CliError(
                        f"{path}:{reader.line_num}: kind must be one of {', '.join(KINDS)}"
                    )
                yield (
                    reader.line_num,
                    gateway_pb2.DeliveryPair(
                        sender_id=row["sender_id"], recipient_id=row["recipient_id"], kind=kind
                    ),
                )

    async def check_batch(self, args: argparse.Namespace) -> int:
        """Decide every pair of a CSV, BATCH pairs per call; one line (or JSON object) per pair."""
        channel, stub = self.cli._gateway(args)
        refused = 0
        async with channel:
            batch: list[tuple[int, gateway_pb2.DeliveryPair]] = []

            async def flush() -> None:
                nonlocal refused
                reply = await stub.CheckDeliveryBatch(
                    gateway_pb2.CheckDeliveryBatchRequest(pairs=[p for _, p in batch])
                )
                for (line, pair), reason in zip(batch, reply.reasons, strict=True):
                    name = gateway_pb2.DeliveryReason.Name(reason)
                    refused += reason != gateway_pb2.DELIVERY_REASON_ALLOWED
                    fields = {"line": line, "sender_id": pair.sender_id}
                    fields |= {"recipient_id": pair.recipient_id, "reason": name}
                    if args.json:
                        print(json.dumps(fields | {"version": reply.version}))
                    else:
                        print(f"{line}\t{pair.sender_id}\t{pair.recipient_id}\t{name}")
                batch.clear()

            for item in self._pairs(Path(args.file)):
                batch.append(item)
                if len(batch) >= BATCH:
                    await flush()
            if batch:
                await flush()
        return 0 if not refused else 3

    async def watch(self, args: argparse.Namespace) -> int:
        """Print the policy changes one by one as they come (progress marks with --progress);
        --limit N stops after N changes."""
        channel, stub = self.cli._gateway(args)
        async with channel:
            call = stub.WatchPolicyChanges(
                gateway_pb2.WatchPolicyChangesRequest(after_version=args.after)
            )
            count = 0
            async for item in call:
                if not item.changes and args.progress:
                    self._print_item(args, {"progress": {"head_version": item.head_version}})
                for change in item.changes:
                    self._print_item(args, self.cli._as_dict(change))
                    count += 1
                    if args.limit and count >= args.limit:
                        call.cancel()
                        return 0
        return 0

    def _print_item(self, args: argparse.Namespace, data: dict[str, Any]) -> None:
        if args.json:
            print(json.dumps(data, ensure_ascii=False), flush=True)
        else:
            self.cli._print_human(data)
            print("---", flush=True)

    # --- restriction orders (the admin) ---------------------------------------------------

    def _received_at(self, text: str | None) -> Timestamp:
        if text is None:
            now = Timestamp()
            now.GetCurrentTime()
            return now
        return self.cli._time_arg(text)

    async def order_record(self, args: argparse.Namespace) -> int:
        channel, stub = self.cli._gateway_admin(args)
        async with channel:
            reply = await stub.RecordRestrictionOrder(
                gateway_pb2.RecordRestrictionOrderRequest(
                    order_id=args.order_id,
                    user_id=args.user or "",
                    phone_number=args.phone or "",
                    scope=SCOPES[args.scope],
                    received_at=self._received_at(args.received_at),
                    hold=args.hold,
                )
            )
        self.cli._print(args, reply, with_defaults=True)
        return 0

    async def order_enforce(self, args: argparse.Namespace) -> int:
        channel, stub = self.cli._gateway_admin(args)
        async with channel:
            reply = await stub.EnforceRestrictionOrder(
                gateway_pb2.EnforceRestrictionOrderRequest(order_id=args.order_id)
            )
        self.cli._print(args, reply)
        return 0

    async def order_lift(self, args: argparse.Namespace) -> int:
        channel, stub = self.cli._gateway_admin(args)
        async with channel:
            reply = await stub.LiftRestrictionOrder(
                gateway_pb2.LiftRestrictionOrderRequest(order_id=args.order_id, reason=args.reason)
            )
        self.cli._print(args, reply)
        return 0

    async def order_list(self, args: argparse.Namespace) -> int:
        channel, stub = self.cli._gateway_admin(args)
        async with channel:
            reply = await stub.ListRestrictionOrders(
                gateway_pb2.ListRestrictionOrdersRequest(
                    state=STATES.get(
                        args.state or "", gateway_pb2.RESTRICTION_ORDER_STATE_UNSPECIFIED
                    ),
                    limit=args.limit,
                )
            )
        self.cli._print(args, reply)
        return 0

    async def order_audit(self, args: argparse.Namespace) -> int:
        channel, stub = self.cli._gateway_admin(args)
        async with channel:
            reply = await stub.ListRestrictionAudit(
                gateway_pb2.ListRestrictionAuditRequest(
                    order_id=args.order_id or "", limit=args.limit
                )
            )
        self.cli._print(args, reply)
        return 0


# --- the parser ----------------------------------------------------------------------------------


def add_commands(sub: Any, common: argparse.ArgumentParser, cli: ModuleType) -> None:
    """The `policy` group and its `order` subgroup; cli is services.cli.main."""
    commands = Commands(cli)
    group = sub.add_parser(
        "policy", help="the delivery policy: preferences, decisions, restriction orders"
    ).add_subparsers(dest="action", required=True)

    def parser(name: str, help: str, func: Any, *, user: bool = True) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = group.add_parser(name, parents=[common], help=help)
        p.add_argument("--messenger", "-m", required=True, help="messenger id, e.g. alpha")
        if user:
            p.add_argument("--user", "-u", required=True, help="the user whose preference it is")
        p.set_defaults(func=func)
        return p

    for rule, help in (
        ("accept", "the user accepts messages from a sender"),
        ("refuse", "the user refuses messages from a sender"),
        ("clear", "remove the user's rule for a sender"),
    ):
        p = parser(rule, help, commands.rule)
        p.add_argument("--sender", "-s", required=True, help="the sender's user id")
        p.set_defaults(rule=rule)
    p = parser("unaccepted", "the user's policy for senders not accepted", commands.unaccepted)
    p.add_argument("policy", choices=sorted(POLICIES))
    p = parser("consent", "grant or revoke consent to an automated sender", commands.consent)
    p.add_argument("consent", choices=sorted(CONSENTS))
    p.add_argument("--sender", "-s", required=True, help="the automated sender's user id")
    parser("show", "the user's preferences", commands.show)
    p = parser("check", "may a message go from sender to recipient?", commands.check, user=False)
    p.add_argument("--from", dest="sender", required=True, help="the sender's user id")
    p.add_argument("--to", dest="recipient", required=True, help="the recipient's user id")
    p.add_argument("--kind", choices=sorted(KINDS), default="personal")
    p.add_argument(
        "--min-version", type=int, default=0, help="decide at this policy version or later"
    )
    p = parser(
        "check-batch",
        "decide every pair of a CSV (sender_id,recipient_id,kind; - for stdin)",
        commands.check_batch,
        user=False,
    )
    p.add_argument("file")
    p = parser("watch", "print the policy changes as they come", commands.watch, user=False)
    p.add_argument("--after", type=int, default=0, help="show changes after this version")
    p.add_argument("--limit", type=int, default=0, help="stop after this many changes")
    p.add_argument("--progress", action="store_true", help="also print progress marks")

    orders = group.add_parser(
        "order", help="a regulator's restriction orders (the messenger's admin)"
    ).add_subparsers(dest="order_action", required=True)

    def order_parser(name: str, help: str, func: Any) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = orders.add_parser(name, parents=[common], help=help)
        p.add_argument("--messenger", "-m", required=True, help="messenger id, e.g. alpha")
        p.set_defaults(func=func)
        return p

    p = order_parser(
        "record", "record an order (in force at once unless --hold)", commands.order_record
    )
    p.add_argument("order_id", help="the regulator's id of the order")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--user", "-u", help="the user to restrict")
    target.add_argument("--phone", "-p", help="the phone number to restrict")
    p.add_argument("--scope", choices=sorted(SCOPES), default="all")
    p.add_argument(
        "--received-at",
        help="when the demand reached the messenger (RFC 3339 or YYYY-MM-DD; default now): "
        "the 24 hours run from it",
    )
    p.add_argument("--hold", action="store_true", help="record it RECEIVED, not yet in force")
    p = order_parser("enforce", "put a held order in force", commands.order_enforce)
    p.add_argument("order_id")
    p = order_parser("lift", "lift an order", commands.order_lift)
    p.add_argument("order_id")
    p.add_argument("--reason", default="", help="why it is lifted")
    p = order_parser("list", "the orders, newest first", commands.order_list)
    p.add_argument("--state", choices=sorted(STATES))
    p.add_argument("--limit", type=int, default=100)
    p = order_parser("audit", "the orders' audit trail, oldest first", commands.order_audit)
    p.add_argument("order_id", nargs="?")
    p.add_argument("--limit", type=int, default=100)
