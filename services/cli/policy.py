"""The delivery policy of a messenger's gateway: `idmesh policy ...`.

Users' preferences, decisions and the change stream act as the messenger's front end;
restriction orders (`idmesh policy order ...`) as the messenger's admin."""

from __future__ import annotations

import argparse
import asyncio
import csv
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, TextIO

from google.protobuf.timestamp_pb2 import Timestamp
from idmesh.gateway.v1 import gateway_pb2

from services.cli import follow
from services.cli.command import (
    CALL_TIMEOUT,
    UINT64_MAX,
    Subparsers,
    bounded_int,
    messenger_option,
    time_arg,
    unary,
)
from services.cli.connection import GATEWAY, GATEWAY_ADMIN, CliError, connect
from services.cli.output import as_dict, emit

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
BATCH = 1_000  # pairs per CheckDeliveryBatch call of `policy check-batch`


def _csv_source(path: str) -> AbstractContextManager[TextIO]:
    """The text of path, opened now ("-": stdin, left open when done)."""
    if path == "-":
        return nullcontext(sys.stdin)
    return Path(path).open(encoding="utf-8")


def _pairs(path: str) -> Iterator[tuple[int, gateway_pb2.DeliveryPair]]:
    """(line, pair) from a CSV with the header sender_id,recipient_id,kind ("-": stdin)."""
    try:
        opened = _csv_source(path)
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc}") from None
    with opened as text:
        reader = csv.DictReader(text)
        missing = {"sender_id", "recipient_id", "kind"} - set(reader.fieldnames or ())
        if missing:
            raise CliError(
                f"{path}: the header must name sender_id, recipient_id, kind (missing "
                f"{', '.join(sorted(missing))})"
            )
        for row in reader:
            kind = KINDS.get((row["kind"] or "").strip().lower())
            if kind is None:
                raise CliError(f"{path}:{reader.line_num}: kind must be one of {', '.join(KINDS)}")
            pair = gateway_pb2.DeliveryPair(
                sender_id=row["sender_id"], recipient_id=row["recipient_id"], kind=kind
            )
            yield reader.line_num, pair


async def cmd_check_batch(args: argparse.Namespace) -> int:
    """Decide every pair of a CSV, BATCH pairs per call; a line per pair (JSON: one array)."""
    decided: list[dict[str, Any]] = []
    async with connect(args, GATEWAY) as stub:
        batch: list[tuple[int, gateway_pb2.DeliveryPair]] = []

        async def flush() -> None:
            reply = await stub.CheckDeliveryBatch(
                gateway_pb2.CheckDeliveryBatchRequest(pairs=[p for _, p in batch]),
                timeout=CALL_TIMEOUT,
            )
            for (line, pair), reason in zip(batch, reply.reasons, strict=True):
                name = gateway_pb2.DeliveryReason.Name(reason)
                decided.append(
                    {
                        "line": line,
                        "sender_id": pair.sender_id,
                        "recipient_id": pair.recipient_id,
                        "reason": name,
                    }
                )
                if not args.json:
                    print(f"{line}\t{pair.sender_id}\t{pair.recipient_id}\t{name}", flush=True)
            batch.clear()

        for item in _pairs(args.file):
            batch.append(item)
            if len(batch) >= BATCH:
                await flush()
        if batch:
            await flush()
    if args.json:
        emit(args, decided)
    allowed = gateway_pb2.DeliveryReason.Name(gateway_pb2.DELIVERY_REASON_ALLOWED)
    return 0 if all(d["reason"] == allowed for d in decided) else 3


async def cmd_watch(args: argparse.Namespace) -> int:
    """Print the policy changes after --after as they come (progress marks with --progress).
    Stops after --limit changes, or after --timeout seconds without one; says on stderr when it
    waits for changes not made yet. --json prints one JSON array when it stops."""
    async with connect(args, GATEWAY) as stub:
        call = stub.WatchPolicyChanges(
            gateway_pb2.WatchPolicyChangesRequest(after_version=args.after)
        )
        try:
            items = aiter(call)
            # The stream opens with a progress mark: the version this gateway decides at.
            try:
                async with asyncio.timeout(CALL_TIMEOUT):
                    opening = await anext(items)
            except TimeoutError:
                raise CliError(
                    f"the gateway did not open the change stream within {CALL_TIMEOUT:g}s"
                ) from None
            if not opening.changes:
                follow.say_waiting(
                    args,
                    existing=max(0, opening.head_version - args.after),
                    what="change(s)",
                    position=f"version {args.after}",
                    head=f"head_version {opening.head_version}",
                )
            return await follow.follow(
                args,
                items,
                lambda item: _changes(args, item),
                counts=lambda entry: "progress" not in entry,
                first=[opening],
                noun="changes",
            )
        finally:
            call.cancel()


def _changes(
    args: argparse.Namespace, item: gateway_pb2.WatchPolicyChangesResponse
) -> list[dict[str, Any]]:
    if not item.changes:
        return [{"progress": {"head_version": str(item.head_version)}}] if args.progress else []
    return [as_dict(change) for change in item.changes]


def _received_at(args: argparse.Namespace) -> Timestamp:
    if args.received_at is not None:
        stamp: Timestamp = args.received_at
        return stamp
    now = Timestamp()
    now.GetCurrentTime()
    return now


def _sender_rule(rule: Any) -> Callable[[argparse.Namespace], gateway_pb2.SetSenderRuleRequest]:
    def request(args: argparse.Namespace) -> gateway_pb2.SetSenderRuleRequest:
        return gateway_pb2.SetSenderRuleRequest(user_id=args.user, sender_id=args.sender, rule=rule)

    return request


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    group = sub.add_parser(
        "policy", help="the delivery policy: preferences, decisions, restriction orders"
    ).add_subparsers(dest="action", required=True)

    def command(name: str, help: str, *, user: bool = True) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = group.add_parser(name, parents=[common], help=help)
        messenger_option(p)
        if user:
            p.add_argument("--user", "-u", required=True, help="the user whose preference it is")
        return p

    for name, help in (
        ("accept", "the user accepts messages from a sender"),
        ("refuse", "the user refuses messages from a sender"),
        ("clear", "remove the user's rule for a sender"),
    ):
        p = command(name, help)
        p.add_argument("--sender", "-s", required=True, help="the sender's user id")
        p.set_defaults(func=unary(GATEWAY, "SetSenderRule", _sender_rule(RULES[name])))
    p = command("unaccepted", "the user's policy for senders not accepted")
    p.add_argument("policy", choices=sorted(POLICIES))
    p.set_defaults(
        func=unary(
            GATEWAY,
            "SetUnacceptedSenderPolicy",
            lambda a: gateway_pb2.SetUnacceptedSenderPolicyRequest(
                user_id=a.user, policy=POLICIES[a.policy]
            ),
        )
    )
    p = command("consent", "grant or revoke consent to an automated sender")
    p.add_argument("consent", choices=sorted(CONSENTS))
    p.add_argument("--sender", "-s", required=True, help="the automated sender's user id")
    p.set_defaults(
        func=unary(
            GATEWAY,
            "SetAutomatedConsent",
            lambda a: gateway_pb2.SetAutomatedConsentRequest(
                user_id=a.user, sender_id=a.sender, consent=CONSENTS[a.consent]
            ),
        )
    )
    p = command("show", "the user's preferences")
    p.set_defaults(
        func=unary(
            GATEWAY,
            "ListPreferences",
            lambda a: gateway_pb2.ListPreferencesRequest(user_id=a.user),
        )
    )
    p = command("check", "may a message go from sender to recipient? (exit 3: no)", user=False)
    p.add_argument("--from", dest="sender", required=True, help="the sender's user id")
    p.add_argument("--to", dest="recipient", required=True, help="the recipient's user id")
    p.add_argument("--kind", choices=sorted(KINDS), default="personal")
    p.add_argument(
        "--min-version",
        type=bounded_int(0, UINT64_MAX),
        default=0,
        help="decide at this policy version or later (a version a change returned)",
    )
    p.set_defaults(
        func=unary(
            GATEWAY,
            "CheckDelivery",
            lambda a: gateway_pb2.CheckDeliveryRequest(
                sender_id=a.sender,
                recipient_id=a.recipient,
                kind=KINDS[a.kind],
                min_version=a.min_version,
            ),
            exit_code=lambda reply: 0 if reply.allowed else 3,
        )
    )
    p = command(
        "check-batch",
        "decide a CSV of sender_id,recipient_id,kind (- for stdin; exit 3: one was refused)",
        user=False,
    )
    p.add_argument("file")
    p.set_defaults(func=cmd_check_batch)
    p = command(
        "watch",
        "print the policy changes (waits for new ones: --limit, --timeout bound it)",
        user=False,
    )
    p.add_argument(
        "--after", type=bounded_int(0, UINT64_MAX), default=0, help="changes after this version"
    )
    follow.add_options(p, counted="changes", limit_type=bounded_int(0, UINT64_MAX))
    p.set_defaults(func=cmd_watch)
    _register_orders(group, common)


def _register_orders(group: Subparsers, common: argparse.ArgumentParser) -> None:
    orders = group.add_parser(
        "order", help="a regulator's restriction orders (the messenger's admin)"
    ).add_subparsers(dest="order_action", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = orders.add_parser(name, parents=[common], help=help)
        messenger_option(p)
        return p

    p = command("record", "record an order (in force at once unless --hold)")
    p.add_argument("order_id", help="the regulator's id of the order")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--user", "-u", help="the user to restrict")
    target.add_argument("--phone", "-p", help="the phone number to restrict")
    p.add_argument("--scope", choices=sorted(SCOPES), default="all")
    p.add_argument(
        "--received-at",
        type=time_arg,
        help="when the demand reached the messenger (RFC 3339 or YYYY-MM-DD; default now): "
        "the 24 hours run from it",
    )
    p.add_argument("--hold", action="store_true", help="record it RECEIVED, not yet in force")
    p.set_defaults(
        func=unary(
            GATEWAY_ADMIN,
            "RecordRestrictionOrder",
            lambda a: gateway_pb2.RecordRestrictionOrderRequest(
                order_id=a.order_id,
                user_id=a.user or "",
                phone_number=a.phone or "",
                scope=SCOPES[a.scope],
                received_at=_received_at(a),
                hold=a.hold,
            ),
        )
    )
    p = command("enforce", "put a held order in force")
    p.add_argument("order_id")
    p.set_defaults(
        func=unary(
            GATEWAY_ADMIN,
            "EnforceRestrictionOrder",
            lambda a: gateway_pb2.EnforceRestrictionOrderRequest(order_id=a.order_id),
        )
    )
    p = command("lift", "lift an order")
    p.add_argument("order_id")
    p.add_argument("--reason", default="", help="why it is lifted")
    p.set_defaults(
        func=unary(
            GATEWAY_ADMIN,
            "LiftRestrictionOrder",
            lambda a: gateway_pb2.LiftRestrictionOrderRequest(order_id=a.order_id, reason=a.reason),
        )
    )
    p = command("list", "the orders, newest first")
    p.add_argument("--state", choices=sorted(STATES))
    p.add_argument("--limit", type=bounded_int(1, 1000), default=100)
    p.set_defaults(
        func=unary(
            GATEWAY_ADMIN,
            "ListRestrictionOrders",
            lambda a: gateway_pb2.ListRestrictionOrdersRequest(
                state=STATES.get(a.state or "", gateway_pb2.RESTRICTION_ORDER_STATE_UNSPECIFIED),
                limit=a.limit,
            ),
        )
    )
    p = command("audit", "the orders' audit trail, oldest first")
    p.add_argument("order_id", nargs="?")
    p.add_argument("--limit", type=bounded_int(1, 1000), default=100)
    p.set_defaults(
        func=unary(
            GATEWAY_ADMIN,
            "ListRestrictionAudit",
            lambda a: gateway_pb2.ListRestrictionAuditRequest(
                order_id=a.order_id or "", limit=a.limit
            ),
        )
    )
