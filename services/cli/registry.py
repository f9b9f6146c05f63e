"""An operator's registry: `idmesh registry ...`. As the operator's admin: subscribers and
their contracts (create, get, terminate, port-out, import), messenger agreements (register,
suspend, messengers), the verification audit trail and the parked notices (parked,
retry-parked); as a messenger (--as-messenger): verify, reassigned."""

from __future__ import annotations

import argparse
import json
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from idmesh.events.v1 import events_pb2
from idmesh.registry.v1 import registry_pb2

from services.cli import csv_import
from services.cli.command import Subparsers, bounded_int, operator_option, time_arg, unary
from services.cli.connection import REGISTRY_ADMIN, REGISTRY_AS_MESSENGER, CliError, connect
from services.cli.output import print_message

REASONS = {
    "contract-ended": events_pb2.TERMINATION_REASON_CONTRACT_ENDED,
    "ported-out": events_pb2.TERMINATION_REASON_PORTED_OUT,
}

SUBSCRIBERS_CSV = csv_import.CsvFormat(
    columns=("phone_number", "contract_id", "activated_at"),
    time_column="activated_at",
    new_request=lambda all_or_nothing: registry_pb2.ImportSubscribersRequest(
        mode=registry_pb2.IMPORT_MODE_ALL_OR_NOTHING
        if all_or_nothing
        else registry_pb2.IMPORT_MODE_VALID_ROWS
    ),
    retry_hint="import with --valid-rows",
)


NOT_A_REASON = 2**31 - 1  # sent for an unknown reason name: the registry refuses that row


def _termination_fields(texts: dict[str, str]) -> dict[str, Any]:
    """A termination row's texts as TerminationRow fields: reason by its CLI name (an unknown
    one is sent as a number the registry refuses for that row)."""
    reason = texts.get("reason", "").strip().lower().replace("_", "-")
    return {
        "phone_number": texts["phone_number"],
        "reason": REASONS.get(reason, 0 if not reason else NOT_A_REASON),
        "recipient_operator_id": texts.get("recipient_operator_id", ""),
    }


TERMINATIONS_CSV = csv_import.CsvFormat(
    columns=("phone_number",),
    optional=("reason", "recipient_operator_id"),
    time_column=None,
    new_request=lambda _all_or_nothing: registry_pb2.TerminateContractsRequest(),
    retry_hint="",
    convert=_termination_fields,
)


async def cmd_terminate_bulk(args: argparse.Namespace) -> int:
    """End the contracts of a CSV file (TerminateContracts), each batch committed as it
    arrives; exit 0 only when every row ended a contract."""
    upload = csv_import.Upload(
        Path(args.file), TERMINATIONS_CSV, batch=args.batch, all_or_nothing=False
    )
    async with connect(args, REGISTRY_ADMIN) as stub:
        try:
            reply, elapsed = await csv_import.stream_file(
                stub.TerminateContracts,
                upload,
                quiet=args.json,
                doing="terminating",
                finishing="ending the last batch",
            )
        except csv_import.CsvError as exc:
            raise CliError(str(exc)) from None
    outcome = registry_pb2.TerminationOutcome
    report = {
        "file": args.file,
        "rows": reply.rows,
        "ended": reply.ended,
        "refused": reply.refused,
        "notices_queued": reply.notices_queued,
        "seconds": round(elapsed, 3),
        "rows_per_second": round(reply.rows / elapsed) if elapsed > 0 else None,
        "refusals": [
            {
                "line": r.line,
                "outcome": outcome.Name(r.outcome).removeprefix("TERMINATION_OUTCOME_"),
                "message": upload.explain(r.line, r.message),
            }
            for r in reply.refusals
        ],
    }
    if args.json:
        print(json.dumps(report, ensure_ascii=False), flush=True)
    else:
        lines = [f"{key}: {report[key]}" for key in ("rows", "ended", "refused", "notices_queued")]
        lines.append(f"seconds: {report['seconds']} ({report['rows_per_second']} rows/s)")
        lines += [
            f"  line {r['line']}: {r['outcome']}: {r['message']}" for r in report["refusals"][:20]
        ]
        if reply.refused > 20:
            lines.append(f"  ... and {reply.refused - 20} more (--json lists up to 1,000)")
        print("\n".join(lines), flush=True)
    return 0 if reply.refused == 0 else 1


def _create_request(args: argparse.Namespace) -> registry_pb2.CreateSubscriberRequest:
    request = registry_pb2.CreateSubscriberRequest(
        phone_number=args.phone, contract_id=args.contract
    )
    if args.activated_at:
        request.activated_at.CopyFrom(args.activated_at)
    return request


async def _pages(
    method: Callable[[Any], Awaitable[Any]], request: Any, field: str, limit: int
) -> list[Any]:
    """The items (the reply's repeated `field`) of a paged listing, following next_page_token
    until `limit` items or the last page."""
    items: list[Any] = []
    while len(items) < limit:
        page = await method(request)
        items.extend(getattr(page, field))
        if not page.next_page_token:
            break
        request.page_token = page.next_page_token
    return items[:limit]


async def cmd_audit(args: argparse.Namespace) -> int:
    """The verification audit trail, newest first, following pages up to --limit records."""
    request = registry_pb2.ListAuditRecordsRequest(
        messenger_id=args.messenger_id or "",
        outcome=(args.outcome or "").upper(),
        page_size=min(args.limit, 1000),
    )
    if args.since:
        request.since.CopyFrom(args.since)
    if args.until:
        request.until.CopyFrom(args.until)
    async with connect(args, REGISTRY_ADMIN) as stub:
        records = await _pages(stub.ListAuditRecords, request, "records", args.limit)
    reply = registry_pb2.ListAuditRecordsResponse(records=records)
    if args.json:
        print_message(args, reply)
    else:
        for r in reply.records:
            print(
                f"{r.recorded_at.ToJsonString()}  {r.messenger_id:<12} {r.masked_phone_number:<14}"
                f" {r.outcome:<18} {r.idempotency_key}"
            )
    return 0


async def cmd_parked(args: argparse.Namespace) -> int:
    """The notices the notifier refused for good, oldest first, up to --limit."""
    request = registry_pb2.ListParkedNoticesRequest(page_size=min(args.limit, 1000))
    async with connect(args, REGISTRY_ADMIN) as stub:
        notices = await _pages(stub.ListParkedNotices, request, "notices", args.limit)
    reply = registry_pb2.ListParkedNoticesResponse(notices=notices)
    if args.json:
        print_message(args, reply)
    elif not reply.notices:
        print("no parked notices")
    else:
        for n in reply.notices:
            print(
                f"{n.parked_at.ToJsonString()}  {n.event_id}  {n.messenger_id:<12}"
                f" {n.masked_phone_number:<14} {n.status}: {n.message}  trace {n.trace_id or '-'}"
            )
    return 0


def _retry_parked_request(args: argparse.Namespace) -> registry_pb2.RetryParkedNoticesRequest:
    if bool(args.event_ids) == args.all:
        raise CliError("name the parked notices to retry (event ids), or give --all")
    return registry_pb2.RetryParkedNoticesRequest(event_ids=args.event_ids)


def _verify_note(reply: registry_pb2.VerifySubscriberResponse) -> str | None:
    if reply.result != registry_pb2.VERIFICATION_RESULT_IDENTIFIED:
        return None
    return (
        f"the subscriber is now bound to this messenger at {reply.operator_id}, with the "
        "identification code above (as a gateway's verification does); ending the contract "
        "will notify the messenger"
    )


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    reg = sub.add_parser("registry", help="an operator's registry (admin)").add_subparsers(
        dest="action", required=True
    )

    p = reg.add_parser("create", parents=[common], help="create a subscriber contract")
    operator_option(p)
    p.add_argument("--phone", "-p", required=True)
    p.add_argument("--contract", "-c", required=True)
    p.add_argument(
        "--activated-at", type=time_arg, help="RFC 3339 time, or YYYY-MM-DD; default now"
    )
    p.set_defaults(func=unary(REGISTRY_ADMIN, "CreateSubscriber", _create_request))

    p = reg.add_parser("get", parents=[common], help="a subscriber and the messengers it uses")
    operator_option(p)
    p.add_argument("--phone", "-p", required=True)
    p.set_defaults(
        func=unary(
            REGISTRY_ADMIN,
            "GetSubscriber",
            lambda a: registry_pb2.GetSubscriberRequest(phone_number=a.phone),
        )
    )

    p = reg.add_parser("terminate", parents=[common], help="end a subscriber's contract")
    operator_option(p)
    p.add_argument("--phone", "-p", required=True)
    p.add_argument("--reason", choices=sorted(REASONS), default="contract-ended")
    p.set_defaults(
        func=unary(
            REGISTRY_ADMIN,
            "TerminateContract",
            lambda a: registry_pb2.TerminateContractRequest(
                phone_number=a.phone, reason=REASONS[a.reason]
            ),
        )
    )

    p = reg.add_parser(
        "port-out", parents=[common], help="the number moved to another operator: end its contract"
    )
    operator_option(p, "the donor operator, e.g. beeline")
    p.add_argument("--phone", "-p", required=True)
    p.add_argument("--to", required=True, help="the recipient operator id, e.g. megafon")
    p.set_defaults(
        func=unary(
            REGISTRY_ADMIN,
            "PortOut",
            lambda a: registry_pb2.PortOutRequest(phone_number=a.phone, recipient_operator_id=a.to),
        )
    )

    p = reg.add_parser(
        "import",
        parents=[common],
        help="bulk-load contracts from a CSV (phone_number,contract_id,activated_at)",
    )
    operator_option(p)
    p.add_argument("file", help="CSV with the header phone_number,contract_id,activated_at")
    p.add_argument(
        "--valid-rows",
        action="store_true",
        help="commit the valid rows and report the others (default: all or nothing)",
    )
    p.add_argument(
        "--batch",
        type=bounded_int(1, csv_import.MAX_BATCH),
        default=5000,
        help=f"rows per message (1..{csv_import.MAX_BATCH})",
    )
    p.set_defaults(
        func=csv_import.import_command(
            REGISTRY_ADMIN,
            "ImportSubscribers",
            SUBSCRIBERS_CSV,
            all_or_nothing=lambda a: not a.valid_rows,
            batch=lambda a: int(a.batch),
        )
    )

    p = reg.add_parser(
        "terminate-bulk",
        parents=[common],
        help="end the contracts of a CSV (phone_number[,reason][,recipient_operator_id])",
    )
    operator_option(p)
    p.add_argument(
        "file",
        help="CSV with the header phone_number and optionally reason (contract-ended, "
        "ported-out) and recipient_operator_id (for ported-out)",
    )
    p.add_argument(
        "--batch",
        type=bounded_int(1, csv_import.MAX_BATCH),
        default=1000,
        help=f"rows per message, each committed as it arrives (1..{csv_import.MAX_BATCH})",
    )
    p.set_defaults(func=cmd_terminate_bulk)

    p = reg.add_parser("register", parents=[common], help="register a messenger agreement")
    operator_option(p)
    p.add_argument("messenger_id")
    p.add_argument("--name")
    p.set_defaults(
        func=unary(
            REGISTRY_ADMIN,
            "RegisterMessenger",
            lambda a: registry_pb2.RegisterMessengerRequest(
                messenger_id=a.messenger_id, display_name=a.name or ""
            ),
        )
    )

    p = reg.add_parser("suspend", parents=[common], help="suspend a messenger agreement")
    operator_option(p)
    p.add_argument("messenger_id")
    p.set_defaults(
        func=unary(
            REGISTRY_ADMIN,
            "SuspendMessenger",
            lambda a: registry_pb2.SuspendMessengerRequest(messenger_id=a.messenger_id),
        )
    )

    p = reg.add_parser("messengers", parents=[common], help="list messenger agreements")
    operator_option(p)
    p.set_defaults(
        func=unary(REGISTRY_ADMIN, "ListMessengers", lambda _: registry_pb2.ListMessengersRequest())
    )

    p = reg.add_parser("audit", parents=[common], help="the verification audit trail")
    operator_option(p)
    p.add_argument("--messenger-id", help="only this messenger's requests")
    p.add_argument("--outcome", help="only this outcome, e.g. IDENTIFIED, NO_AGREEMENT")
    p.add_argument(
        "--since", type=time_arg, help="RFC 3339 time, or YYYY-MM-DD: records at or after it"
    )
    p.add_argument("--until", type=time_arg, help="RFC 3339 time, or YYYY-MM-DD: records before it")
    p.add_argument(
        "--limit", type=bounded_int(1, 1_000_000), default=50, help="at most this many records"
    )
    p.set_defaults(func=cmd_audit)

    p = reg.add_parser(
        "parked", parents=[common], help="notices the notifier refused for good (parked)"
    )
    operator_option(p)
    p.add_argument(
        "--limit", type=bounded_int(1, 1_000_000), default=100, help="at most this many notices"
    )
    p.set_defaults(func=cmd_parked)

    p = reg.add_parser(
        "retry-parked", parents=[common], help="queue parked notices again for the notifier"
    )
    operator_option(p)
    p.add_argument("event_ids", nargs="*", metavar="EVENT_ID", help="the notices to retry")
    p.add_argument("--all", action="store_true", help="retry every parked notice")
    p.set_defaults(func=unary(REGISTRY_ADMIN, "RetryParkedNotices", _retry_parked_request))

    p = reg.add_parser(
        "verify",
        parents=[common],
        help="VerifySubscriber as a messenger, exactly as its gateway asks: not a dry run, an "
        "identified subscriber is bound to the messenger and an identification code is minted",
        description="Ask the registry VerifySubscriber as the messenger --as-messenger. Not a "
        "dry run, the real request: when a subscriber holds the number, the registry binds "
        "the subscriber to that messenger and mints (or returns) the pair's identification code; "
        "`idmesh registry get` then lists the binding, and ending the contract notifies that "
        "messenger.",
    )
    operator_option(p)
    p.add_argument("--phone", "-p", required=True)
    p.add_argument("--as-messenger", default="alpha", help="the asking messenger (default alpha)")
    p.add_argument("--idempotency-key", help="the idempotency key (default: a new one)")
    p.add_argument("--wait", type=float, default=10.0, help="the call's deadline in seconds")
    p.set_defaults(
        func=unary(
            REGISTRY_AS_MESSENGER,
            "VerifySubscriber",
            lambda a: registry_pb2.VerifySubscriberRequest(
                request_id=a.idempotency_key or uuid.uuid4().hex, phone_number=a.phone
            ),
            timeout=lambda a: a.wait,
            note=_verify_note,
        )
    )

    p = reg.add_parser(
        "reassigned",
        parents=[common],
        help="has the number changed hands since a date? (asked as a messenger)",
    )
    operator_option(p)
    p.add_argument("--phone", "-p", required=True)
    p.add_argument(
        "--since", type=time_arg, required=True, help="RFC 3339 time, or YYYY-MM-DD (00:00 UTC)"
    )
    p.add_argument("--as-messenger", default="alpha", help="the asking messenger (default alpha)")
    p.set_defaults(
        func=unary(
            REGISTRY_AS_MESSENGER,
            "CheckNumberReassigned",
            lambda a: registry_pb2.CheckNumberReassignedRequest(
                phone_number=a.phone, since=a.since
            ),
        )
    )
