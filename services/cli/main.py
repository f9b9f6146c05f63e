"""`idmesh`: run the local mesh and drive every service through its gRPC API.

Addresses come from the running mesh (DATA/mesh.json, DATA from --data-dir or IDMESH_DATA_DIR,
default ./data) unless --address is given. The CLI presents the identity of the role it acts
in: a messenger's front end for identification, an operator's admin for the registry, a
messenger for the notifier. A refused call prints one line, `error: CODE: message`, and exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import sys
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TextIO

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from idmesh.events.v1 import events_pb2
from idmesh.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from idmesh.notifier.v1 import notifier_pb2, notifier_pb2_grpc
from idmesh.registry.v1 import registry_pb2, registry_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from services.cli import bulk_import, policy, sms
from services.cli import mesh as meshlib
from services.common import pki
from services.common.channels import open_channel
from services.common.errors import DomainError, InvalidInput
from services.common.identity import TRUST_DOMAIN, Caller, Kind, Role, parse_identity
from services.common.tls import CredentialsError, TlsFiles
from services.messenger_gateway.ported import (
    MAX_ROWS_PER_BATCH,
    CsvRow,
    PortedCsvError,
    parse_ported_at,
    read_ported_csv,
)

Handler = Callable[[argparse.Namespace], Awaitable[Any]]


class CliError(Exception):
    pass


# -- addressing ------------------------------------------------------------------------------


def _data_dir(args: argparse.Namespace) -> Path:
    return Path(args.data_dir or os.environ.get("IDMESH_DATA_DIR") or "data")


def _address(args: argparse.Namespace, kind: str, key: str | None, value: str | None) -> str:
    if args.address:
        return str(args.address)
    try:
        layout = meshlib.load_layout(_data_dir(args))
    except meshlib.MeshError as exc:
        raise CliError(str(exc)) from None
    for info in layout.values():
        if info["kind"] == kind and (key is None or info.get(key) == value):
            return str(info["address"])
    raise CliError(f"the mesh at {_data_dir(args)} has no {kind}" + (f" {value}" if value else ""))


def _credentials(args: argparse.Namespace, identity: Caller) -> TlsFiles | None:
    """The TLS files to act as identity: --ca/--cert/--key (or IDMESH_TLS_*), else the running
    mesh's PKI; None with --insecure or on a plaintext mesh. Checked before use, so an expired
    or foreign certificate is reported here rather than as a closed connection."""
    if args.insecure:
        return None
    given = [
        args.ca or os.environ.get("IDMESH_TLS_CA"),
        args.cert or os.environ.get("IDMESH_TLS_CERT"),
        args.key or os.environ.get("IDMESH_TLS_KEY"),
    ]
    if any(given):
        if not all(given):
            raise CliError("give all of --ca, --cert and --key (or IDMESH_TLS_CA/CERT/KEY)")
        files = TlsFiles(Path(given[0]), Path(given[1]), Path(given[2]))  # type: ignore[arg-type]
    else:
        try:
            pki_dir = meshlib.load_pki_dir(_data_dir(args))
        except meshlib.MeshError as exc:
            raise CliError(f"{exc}; or pass --ca/--cert/--key, or --insecure") from None
        if pki_dir is None:
            return None
        files = pki.files_for(pki_dir, identity)
    try:
        files.check()
    except (CredentialsError, OSError) as exc:
        raise CliError(f"cannot act as {identity}: {exc}") from None
    return files


def _open(args: argparse.Namespace, address: str, identity: Caller) -> grpc.aio.Channel:
    return open_channel(address, identity=identity, tls=_credentials(args, identity))


def _gateway(args: argparse.Namespace) -> tuple[grpc.aio.Channel, Any]:
    address = _address(args, "messenger_gateway", "messenger_id", args.messenger)
    channel = _open(args, address, Caller(Kind.MESSENGER, args.messenger, Role.FRONTEND))
    return channel, gateway_pb2_grpc.GatewayServiceStub(channel)


def _registry_admin(args: argparse.Namespace) -> tuple[grpc.aio.Channel, Any]:
    address = _address(args, "operator_registry", "operator_id", args.operator)
    channel = _open(args, address, Caller(Kind.OPERATOR, args.operator, Role.ADMIN))
    return channel, registry_pb2_grpc.RegistryAdminServiceStub(channel)


def _notifier(args: argparse.Namespace) -> tuple[grpc.aio.Channel, Any]:
    address = _address(args, "notifier", None, None)
    channel = _open(args, address, Caller(Kind.MESSENGER, args.messenger))
    return channel, notifier_pb2_grpc.NotifierServiceStub(channel)


# -- output ----------------------------------------------------------------------------------


def _as_dict(message: Message, *, with_defaults: bool = False) -> dict[str, Any]:
    return MessageToDict(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=with_defaults,
    )


def _print(args: argparse.Namespace, message: Message, *, with_defaults: bool = False) -> None:
    data = _as_dict(message, with_defaults=with_defaults)
    if args.json:
        print(json.dumps(data, ensure_ascii=False), flush=True)
        return
    _print_human(data)


def _print_human(data: Any, indent: int = 0) -> None:
    pad = "  " * indent
    if isinstance(data, dict):
        for key, value in data.items():
            if isinstance(value, dict | list):
                print(f"{pad}{key}:")
                _print_human(value, indent + 1)
            else:
                print(f"{pad}{key}: {value}")
    elif isinstance(data, list):
        for item in data:
            if isinstance(item, dict):
                print(f"{pad}-")
                _print_human(item, indent + 1)
            else:
                print(f"{pad}- {item}")
    else:
        print(f"{pad}{data}")


# -- commands --------------------------------------------------------------------------------


async def cmd_pki_init(args: argparse.Namespace) -> int:
    """Create (or complete) a development PKI: a CA, and a key and certificate per identity.
    Each SPEC is an identity path with optional extra DNS names, e.g. operator/beeline or
    operator/beeline@registry-beeline (the host name peers dial it by)."""
    identities: list[Caller] = []
    dns: dict[Caller, list[str]] = {}
    for spec in args.specs:
        path, _, names = spec.partition("@")
        try:
            identity = parse_identity(f"spiffe://{TRUST_DOMAIN}/{path.strip('/')}")
        except DomainError as exc:
            raise CliError(f"{spec!r}: {exc.message}") from None
        identities.append(identity)
        dns[identity] = [n for n in names.split(",") if n]
    files = pki.ensure_pki(Path(args.dir), identities, dns)
    for identity, f in files.items():
        if args.json:
            print(json.dumps({"identity": identity.uri, "cert": str(f.cert), "key": str(f.key)}))
        else:
            print(f"{identity.uri}  {f.cert}  {f.key}")
    return 0


async def cmd_status(args: argparse.Namespace) -> int:
    try:
        layout = meshlib.load_layout(_data_dir(args))
    except meshlib.MeshError as exc:
        raise CliError(str(exc)) from None
    rows = []
    for name, info in layout.items():
        identity = parse_identity(info["identity"])
        async with _open(args, info["address"], identity) as channel:
            try:
                reply = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=2.0
                )
                status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.aio.AioRpcError as exc:
                status = f"DOWN ({exc.code().name})"
        rows.append(
            {
                "service": name,
                "kind": info["kind"],
                "address": info["address"],
                "health": status,
                "metrics": info.get("metrics") or "-",
            }
        )
    if args.json:
        print(json.dumps(rows))
    else:
        headers = ["service", "kind", "address", "health", "metrics"]
        widths = [max(len(h), *(len(r[h]) for r in rows)) for h in headers]
        print("  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
        for r in rows:
            print("  ".join(r[h].ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    return 0 if all(r["health"] == "SERVING" for r in rows) else 1


async def cmd_identify_start(args: argparse.Namespace) -> int:
    channel, stub = _gateway(args)
    async with channel:
        reply = await stub.StartIdentification(
            gateway_pb2.StartIdentificationRequest(user_id=args.user, phone_number=args.phone)
        )
    _print(args, reply)
    return 0


async def cmd_identify_confirm(args: argparse.Namespace) -> int:
    code = args.code
    if code is None:
        outbox = _sms_outbox(args)
        found = sms.latest_code(outbox, identification_id=args.identification_id)
        if found is None:
            raise CliError(
                f"no one-time code for {args.identification_id} in {outbox}; pass --code"
            )
        code = found
    channel, stub = _gateway(args)
    async with channel:
        reply = await stub.ConfirmPossession(
            gateway_pb2.ConfirmPossessionRequest(
                identification_id=args.identification_id, code=code
            ),
            timeout=args.wait,
        )
    _print(args, reply)
    return 0


async def cmd_identify_show(args: argparse.Namespace) -> int:
    channel, stub = _gateway(args)
    async with channel:
        reply = await stub.GetIdentification(
            gateway_pb2.GetIdentificationRequest(user_id=args.user)
        )
    _print(args, reply)
    return 0


async def cmd_identify_change_number(args: argparse.Namespace) -> int:
    channel, stub = _gateway(args)
    async with channel:
        reply = await stub.ChangePhoneNumber(
            gateway_pb2.ChangePhoneNumberRequest(user_id=args.user, phone_number=args.phone)
        )
    _print(args, reply)
    return 0


async def cmd_access(args: argparse.Namespace) -> int:
    channel, stub = _gateway(args)
    async with channel:
        reply = await stub.CheckAccess(gateway_pb2.CheckAccessRequest(user_id=args.user))
    _print(args, reply, with_defaults=True)
    return 0 if reply.allowed else 3


def _sms_outbox(args: argparse.Namespace) -> Path:
    if args.sms_outbox:
        return Path(args.sms_outbox)
    try:
        layout = meshlib.load_layout(_data_dir(args))
    except meshlib.MeshError as exc:
        raise CliError(str(exc)) from None
    for info in layout.values():
        if info["kind"] == "messenger_gateway" and info.get("messenger_id") == args.messenger:
            return Path(info["sms_outbox"])
    raise CliError(f"the mesh has no gateway for messenger {args.messenger}")


async def cmd_sms(args: argparse.Namespace) -> int:
    messages = sms.read_outbox(_sms_outbox(args))
    if args.phone:
        messages = [m for m in messages if m.get("phone_number") == args.phone]
    messages = messages[-args.last :]
    if args.json:
        print(json.dumps(messages, ensure_ascii=False))
    else:
        for m in messages:
            print(
                f"{m['sent_at']}  to {m['phone_number']}  id {m['identification_id']}: {m['text']}"
            )
    return 0


async def cmd_registry_create(args: argparse.Namespace) -> int:
    request = registry_pb2.CreateSubscriberRequest(
        phone_number=args.phone, contract_id=args.contract
    )
    if args.activated_at:
        request.activated_at.FromJsonString(args.activated_at)
    channel, stub = _registry_admin(args)
    async with channel:
        _print(args, await stub.CreateSubscriber(request))
    return 0


async def cmd_registry_get(args: argparse.Namespace) -> int:
    channel, stub = _registry_admin(args)
    async with channel:
        _print(
            args,
            await stub.GetSubscriber(registry_pb2.GetSubscriberRequest(phone_number=args.phone)),
        )
    return 0


REASONS = {
    "contract-ended": events_pb2.TERMINATION_REASON_CONTRACT_ENDED,
    "ported-out": events_pb2.TERMINATION_REASON_PORTED_OUT,
}


async def cmd_registry_terminate(args: argparse.Namespace) -> int:
    channel, stub = _registry_admin(args)
    async with channel:
        reply = await stub.TerminateContract(
            registry_pb2.TerminateContractRequest(
                phone_number=args.phone, reason=REASONS[args.reason]
            )
        )
    _print(args, reply)
    return 0


async def cmd_registry_register(args: argparse.Namespace) -> int:
    channel, stub = _registry_admin(args)
    async with channel:
        reply = await stub.RegisterMessenger(
            registry_pb2.RegisterMessengerRequest(
                messenger_id=args.messenger_id, display_name=args.name or ""
            )
        )
    _print(args, reply)
    return 0


async def cmd_registry_suspend(args: argparse.Namespace) -> int:
    channel, stub = _registry_admin(args)
    async with channel:
        reply = await stub.SuspendMessenger(
            registry_pb2.SuspendMessengerRequest(messenger_id=args.messenger_id)
        )
    _print(args, reply)
    return 0


async def cmd_registry_list(args: argparse.Namespace) -> int:
    channel, stub = _registry_admin(args)
    async with channel:
        _print(args, await stub.ListMessengers(registry_pb2.ListMessengersRequest()))
    return 0


async def cmd_registry_audit(args: argparse.Namespace) -> int:
    """The verification audit trail, newest first, following pages up to --limit records."""
    request = registry_pb2.ListAuditRecordsRequest(
        messenger_id=args.messenger_id or "",
        outcome=(args.outcome or "").upper(),
        page_size=min(args.limit, 1000),
    )
    if args.since:
        request.since.FromJsonString(args.since)
    if args.until:
        request.until.FromJsonString(args.until)
    records: list[registry_pb2.AuditRecord] = []
    channel, stub = _registry_admin(args)
    async with channel:
        while len(records) < args.limit:
            page = await stub.ListAuditRecords(request)
            records.extend(page.records)
            if not page.next_page_token:
                break
            request.page_token = page.next_page_token
    reply = registry_pb2.ListAuditRecordsResponse(records=records[: args.limit])
    if args.json:
        _print(args, reply)
    else:
        for r in reply.records:
            print(
                f"{r.recorded_at.ToJsonString()}  {r.messenger_id:<12} {r.masked_phone_number:<14}"
                f" {r.outcome:<18} {r.request_id}"
            )
    return 0


async def cmd_notifier_status(args: argparse.Namespace) -> int:
    channel, stub = _notifier(args)
    async with channel:
        reply = await stub.GetDeliveryStatus(
            notifier_pb2.GetDeliveryStatusRequest(messenger_id=args.messenger)
        )
    _print(args, reply)
    return 0


async def cmd_notifier_watch(args: argparse.Namespace) -> int:
    """Print the messenger's events as they come (read-only: it does not ack)."""
    channel, stub = _notifier(args)
    async with channel:
        call = stub.Subscribe(
            notifier_pb2.SubscribeRequest(messenger_id=args.messenger, after_seq=args.after)
        )
        count = 0
        async for item in call:
            if item.HasField("progress") and not args.progress:
                continue
            _print(args, item)
            if not args.json:
                print("---", flush=True)
            count += 1
            if args.limit and count >= args.limit:
                call.cancel()
                break
    return 0


# -- ported numbers (issue 5) ------------------------------------------------------------------


def _gateway_admin(args: argparse.Namespace) -> tuple[grpc.aio.Channel, Any]:
    address = _address(args, "messenger_gateway", "messenger_id", args.messenger)
    channel = _open(args, address, Caller(Kind.MESSENGER, args.messenger, Role.ADMIN))
    return channel, gateway_pb2_grpc.GatewayAdminServiceStub(channel)


def _registry_as_messenger(args: argparse.Namespace) -> tuple[grpc.aio.Channel, Any]:
    address = _address(args, "operator_registry", "operator_id", args.operator)
    channel = _open(args, address, Caller(Kind.MESSENGER, args.as_messenger))
    return channel, registry_pb2_grpc.RegistryServiceStub(channel)


def _time_arg(text: str) -> Timestamp:
    """RFC 3339 with a time zone, or YYYY-MM-DD (midnight UTC)."""
    try:
        value = parse_ported_at(text)
    except InvalidInput as exc:
        raise CliError(exc.message.replace("ported_at", "time", 1)) from None
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


async def cmd_registry_port_out(args: argparse.Namespace) -> int:
    channel, stub = _registry_admin(args)
    async with channel:
        reply = await stub.PortOut(
            registry_pb2.PortOutRequest(phone_number=args.phone, recipient_operator_id=args.to)
        )
    _print(args, reply)
    return 0


async def cmd_registry_reassigned(args: argparse.Namespace) -> int:
    """Ask a registry, as a messenger, whether the number changed hands since --since."""
    request = registry_pb2.CheckNumberReassignedRequest(
        phone_number=args.phone, since=_time_arg(args.since)
    )
    channel, stub = _registry_as_messenger(args)
    async with channel:
        reply = await stub.CheckNumberReassigned(request)
    _print(args, reply)
    return 0


async def cmd_identify_reassigned(args: argparse.Namespace) -> int:
    channel, stub = _gateway(args)
    async with channel:
        reply = await stub.CheckNumberReassigned(
            gateway_pb2.CheckNumberReassignedRequest(user_id=args.user), timeout=30
        )
    _print(args, reply)
    return 0


async def cmd_gateway_route(args: argparse.Namespace) -> int:
    channel, stub = _gateway_admin(args)
    async with channel:
        reply = await stub.ResolveOperator(
            gateway_pb2.ResolveOperatorRequest(phone_number=args.phone)
        )
    _print(args, reply, with_defaults=True)
    return 0


async def cmd_gateway_import_ported(args: argparse.Namespace) -> int:
    """Stream a ported-numbers CSV (services/messenger_gateway/ported.py) in batches. Rows the
    CLI cannot read go without ported_at, so that the gateway rejects them too (and an
    all-or-nothing import commits nothing); their errors carry the CLI's explanation."""
    path = Path(args.file)
    with _open_text(path) as handle:
        rows = read_ported_csv(handle)
        try:
            first = next(rows, None)
        except PortedCsvError as exc:
            raise CliError(f"{path}: {exc}") from None
        problems: dict[int, str] = {}
        sent = 0

        def to_pb(row: CsvRow) -> gateway_pb2.PortedNumber:
            nonlocal sent
            sent += 1
            if row.problem:
                problems[row.row.line] = row.problem
            item = row.row
            pb = gateway_pb2.PortedNumber(
                line=item.line,
                phone_number=item.phone_number,
                recipient_operator_id=item.recipient_operator_id,
            )
            if item.ported_at is not None:
                pb.ported_at.FromDatetime(item.ported_at)
            return pb

        async def requests() -> AsyncIterator[gateway_pb2.ImportPortedNumbersRequest]:
            batch: list[gateway_pb2.PortedNumber] = []
            for row in itertools.chain([first] if first else [], rows):
                batch.append(to_pb(row))
                if len(batch) >= args.batch_size:
                    yield gateway_pb2.ImportPortedNumbersRequest(
                        all_or_nothing=args.all_or_nothing, rows=batch
                    )
                    batch = []
            if batch or sent == 0:
                yield gateway_pb2.ImportPortedNumbersRequest(
                    all_or_nothing=args.all_or_nothing, rows=batch
                )

        channel, stub = _gateway_admin(args)
        async with channel:
            reply = await stub.ImportPortedNumbers(requests())
    errors = []
    for error in reply.errors:
        message = error.message
        local = problems.get(error.line)
        if local:
            message = local if message.startswith("ported_at is missing") else f"{message}; {local}"
        errors.append({"line": error.line, "message": message})
    result = {
        "rows": sent,
        "imported": reply.imported,
        "unchanged": sent - reply.imported - reply.rejected if reply.committed else 0,
        "rejected": reply.rejected,
        "committed": reply.committed,
        "errors": errors,
    }
    if args.json:
        print(json.dumps(result, ensure_ascii=False), flush=True)
    else:
        for key in ("rows", "imported", "unchanged", "rejected", "committed"):
            print(f"{key}: {result[key]}")
        for e in errors:
            print(f"  line {e['line']}: {e['message']}")
        if reply.rejected > len(errors):
            print(f"  ... and {reply.rejected - len(errors)} more")
    return 0 if reply.committed and reply.rejected == 0 else 1


def _open_text(path: Path) -> TextIO:
    """The file, opened for reading once the whole of it has been checked to be UTF-8 (a bad
    byte found half-way through the upload would leave a partial import)."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            for _ in f:
                pass
        return path.open(encoding="utf-8-sig", newline="")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read {path}: {exc}") from None


def _add_porting_commands(sub: Any, ident: Any, reg: Any, common: argparse.ArgumentParser) -> None:
    p = reg.add_parser(
        "port-out", parents=[common], help="the number moved to another operator: end its contract"
    )
    p.add_argument("--operator", "-o", required=True, help="the donor operator, e.g. beeline")
    p.add_argument("--phone", "-p", required=True)
    p.add_argument("--to", required=True, help="the recipient operator id, e.g. megafon")
    p.set_defaults(func=cmd_registry_port_out)
    p = reg.add_parser(
        "reassigned",
        parents=[common],
        help="has the number changed hands since a date? (asked as a messenger)",
    )
    p.add_argument("--operator", "-o", required=True, help="operator id, e.g. beeline")
    p.add_argument("--phone", "-p", required=True)
    p.add_argument("--since", required=True, help="RFC 3339 time, or YYYY-MM-DD (00:00 UTC)")
    p.add_argument("--as-messenger", default="alpha", help="the asking messenger (default alpha)")
    p.set_defaults(func=cmd_registry_reassigned)

    p = ident.add_parser(
        "reassigned",
        parents=[common],
        help="has the user's number changed hands since the identification?",
    )
    p.add_argument("--messenger", "-m", required=True, help="messenger id, e.g. alpha")
    p.add_argument("--user", "-u", required=True)
    p.set_defaults(func=cmd_identify_reassigned)

    gw = sub.add_parser("gateway", help="a messenger's gateway (admin)").add_subparsers(
        dest="action", required=True
    )
    p = gw.add_parser(
        "import-ported", parents=[common], help="load a ported-numbers CSV into the gateway"
    )
    p.add_argument("--messenger", "-m", required=True, help="messenger id, e.g. alpha")
    p.add_argument("file", help="CSV: phone_number,recipient_operator_id,ported_at")
    p.add_argument(
        "--all-or-nothing", action="store_true", help="one invalid row and nothing is stored"
    )
    p.add_argument(
        "--batch-size", type=_batch_size, default=1000, help="rows per message (1..10000)"
    )
    p.set_defaults(func=cmd_gateway_import_ported)
    p = gw.add_parser("route", parents=[common], help="which operator the gateway would ask")
    p.add_argument("--messenger", "-m", required=True, help="messenger id, e.g. alpha")
    p.add_argument("--phone", "-p", required=True)
    p.set_defaults(func=cmd_gateway_route)


def _batch_size(text: str) -> int:
    value = int(text)
    if not 1 <= value <= MAX_ROWS_PER_BATCH:
        raise argparse.ArgumentTypeError(f"must be 1 to {MAX_ROWS_PER_BATCH}")
    return value


# -- operations (issue 7): bulk import, verify as a messenger, health, metrics ---------------


async def cmd_registry_import(args: argparse.Namespace) -> int:
    channel, stub = _registry_admin(args)
    async with channel:
        try:
            report = await bulk_import.run_import(
                stub,
                Path(args.file),
                valid_rows=args.valid_rows,
                batch=args.batch,
                quiet=args.json,
            )
        except bulk_import.CsvError as exc:
            raise CliError(str(exc)) from None
    if args.json:
        print(json.dumps(report, ensure_ascii=False), flush=True)
    else:
        bulk_import.print_report(report)
    return 0 if report["committed"] and report["rejected"] == 0 else 1


async def cmd_registry_verify(args: argparse.Namespace) -> int:
    """VerifySubscriber as a messenger's gateway would ask it (binds the subscriber to it)."""
    channel, stub = _registry_as_messenger(args)
    async with channel:
        reply = await stub.VerifySubscriber(
            registry_pb2.VerifySubscriberRequest(
                request_id=args.request_id or uuid.uuid4().hex, phone_number=args.phone
            ),
            timeout=args.wait,
        )
    _print(args, reply, with_defaults=True)
    return 0


def _service_info(args: argparse.Namespace, service: str) -> dict[str, Any]:
    try:
        layout = meshlib.load_layout(_data_dir(args))
    except meshlib.MeshError as exc:
        raise CliError(str(exc)) from None
    if service not in layout:
        raise CliError(f"the mesh has no service {service!r}: one of {', '.join(layout)}")
    return layout[service]


async def cmd_health(args: argparse.Namespace) -> int:
    """gRPC health of one service (a mesh service name, or --address): exit 0 when SERVING."""
    if args.address:
        address = str(args.address)
        identity = Caller(Kind.NOTIFIER, "notifier")  # only used to pick mesh credentials
    else:
        if not args.service:
            raise CliError("name a service of the mesh (see idmesh status), or give --address")
        info = _service_info(args, args.service)
        address, identity = str(info["address"]), parse_identity(info["identity"])
    async with _open(args, address, identity) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=args.grpc_service), timeout=args.timeout
        )
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    if args.json:
        print(json.dumps({"address": address, "health": status}))
    else:
        print(f"{address}: {status}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


async def cmd_metrics(args: argparse.Namespace) -> int:
    """The Prometheus metrics of a service: idmesh_* samples (all with --all)."""
    if args.url:
        url = str(args.url)
    else:
        info = _service_info(args, args.service or "")
        if not info.get("metrics"):
            raise CliError(f"{args.service} has no metrics address in the mesh file")
        url = f"http://{info['metrics']}/metrics"
    try:
        text = await asyncio.to_thread(_fetch, url)
    except OSError as exc:
        raise CliError(f"cannot read {url}: {exc}") from None
    samples = [
        (s.name, s.labels, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if (args.all or s.name.startswith("idmesh_")) and (not args.grep or args.grep in s.name)
    ]
    if args.json:
        print(json.dumps([{"name": n, "labels": lb, "value": v} for n, lb, v in samples]))
    else:
        for name, labels, value in samples:
            shown = ",".join(f'{k}="{v}"' for k, v in labels.items())
            number = int(value) if float(value).is_integer() else value
            print(f"{name}{{{shown}}} {number}" if shown else f"{name} {number}")
    return 0


def _fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode("utf-8"))


def _import_batch(text: str) -> int:
    value = int(text)
    if not 1 <= value <= bulk_import.MAX_BATCH:
        raise argparse.ArgumentTypeError(f"must be 1 to {bulk_import.MAX_BATCH}")
    return value


def _add_operations_commands(sub: Any, reg: Any, common: argparse.ArgumentParser) -> None:
    p = reg.add_parser(
        "import",
        parents=[common],
        help="bulk-load contracts from a CSV (phone_number,contract_id,activated_at)",
    )
    p.add_argument("--operator", "-o", required=True, help="operator id, e.g. beeline")
    p.add_argument("file", help="CSV with the header phone_number,contract_id,activated_at")
    p.add_argument(
        "--valid-rows",
        action="store_true",
        help="commit the valid rows and report the others (default: all or nothing)",
    )
    p.add_argument("--batch", type=_import_batch, default=5000, help="rows per message (1..10000)")
    p.set_defaults(func=cmd_registry_import)
    p = reg.add_parser(
        "verify",
        parents=[common],
        help="VerifySubscriber as a messenger (binds the subscriber to it, as a gateway would)",
    )
    p.add_argument("--operator", "-o", required=True, help="operator id, e.g. beeline")
    p.add_argument("--phone", "-p", required=True)
    p.add_argument("--as-messenger", default="alpha", help="the asking messenger (default alpha)")
    p.add_argument("--request-id", help="the request id (default: a new one)")
    p.add_argument("--wait", type=float, default=10.0, help="the call's deadline in seconds")
    p.set_defaults(func=cmd_registry_verify)

    p = sub.add_parser(
        "health", parents=[common], help="gRPC health of one service; exit 0 when SERVING"
    )
    p.add_argument("service", nargs="?", help="a service of the mesh, e.g. registry-beeline")
    p.add_argument("--grpc-service", default="", help="the health service name (default: all)")
    p.add_argument("--timeout", type=float, default=2.0)
    p.set_defaults(func=cmd_health)
    p = sub.add_parser("metrics", parents=[common], help="a service's Prometheus metrics")
    p.add_argument("service", nargs="?", help="a service of the mesh, e.g. notifier")
    p.add_argument("--url", help="the /metrics URL, instead of the mesh's")
    p.add_argument("--grep", help="only metrics whose name contains this")
    p.add_argument("--all", action="store_true", help="also the runtime's own metrics")
    p.set_defaults(func=cmd_metrics)


# -- parser ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print JSON for scripts")
    common.add_argument(
        "--data-dir", help="the mesh's data folder (env IDMESH_DATA_DIR, default ./data)"
    )
    common.add_argument("--address", help="host:port of the service, instead of the mesh's")
    common.add_argument("--ca", help="CA certificate (env IDMESH_TLS_CA; default: the mesh's)")
    common.add_argument("--cert", help="client certificate (env IDMESH_TLS_CERT)")
    common.add_argument("--key", help="client key (env IDMESH_TLS_KEY)")
    common.add_argument(
        "--insecure", action="store_true", help="plaintext, for a mesh in development mode"
    )

    parser = argparse.ArgumentParser(prog="idmesh", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    pki_parser = sub.add_parser("pki", help="development certificates").add_subparsers(
        dest="action", required=True
    )
    p = pki_parser.add_parser(
        "init", help="a CA and a certificate per identity (keeps what exists)"
    )
    p.add_argument("--dir", required=True, help="the PKI folder")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "specs",
        nargs="+",
        metavar="SPEC",
        help="identity path [@dns,...], e.g. notifier@notifier operator/beeline/admin",
    )
    p.set_defaults(func=cmd_pki_init)

    up = sub.add_parser("up", help="run the local mesh until Ctrl-C")
    up.add_argument("--data-dir", default=None)
    up.add_argument("--json", action="store_true", help="print the layout as JSON once serving")

    sub.add_parser(
        "status", parents=[common], help="health of every service of the mesh"
    ).set_defaults(func=cmd_status)

    def messenger(p: argparse.ArgumentParser) -> None:
        p.add_argument("--messenger", "-m", required=True, help="messenger id, e.g. alpha")

    ident = sub.add_parser("identify", help="identify a messenger user").add_subparsers(
        dest="action", required=True
    )
    p = ident.add_parser("start", parents=[common], help="send a one-time code to the number")
    messenger(p)
    p.add_argument("--user", "-u", required=True)
    p.add_argument("--phone", "-p", required=True)
    p.set_defaults(func=cmd_identify_start)
    p = ident.add_parser(
        "confirm", parents=[common], help="confirm the one-time code, then the operator is asked"
    )
    messenger(p)
    p.add_argument("identification_id")
    p.add_argument("--code", help="the one-time code (default: read from the dev SMS outbox)")
    p.add_argument("--sms-outbox", help="the dev SMS outbox file (default: from the mesh)")
    p.add_argument("--wait", type=float, default=30.0, help="seconds to wait for the outcome")
    p.set_defaults(func=cmd_identify_confirm)
    p = ident.add_parser("show", parents=[common], help="the user's current identification")
    messenger(p)
    p.add_argument("--user", "-u", required=True)
    p.set_defaults(func=cmd_identify_show)
    p = ident.add_parser("change-number", parents=[common], help="the user changed number")
    messenger(p)
    p.add_argument("--user", "-u", required=True)
    p.add_argument("--phone", "-p", required=True)
    p.set_defaults(func=cmd_identify_change_number)

    p = sub.add_parser("access", parents=[common], help="may this user send messages?")
    messenger(p)
    p.add_argument("--user", "-u", required=True)
    p.set_defaults(func=cmd_access)

    p = sub.add_parser("sms", parents=[common], help="read the development SMS outbox")
    messenger(p)
    p.add_argument("--phone", "-p")
    p.add_argument("--last", type=int, default=10)
    p.add_argument("--sms-outbox")
    p.set_defaults(func=cmd_sms)

    reg_parser = sub.add_parser("registry", help="an operator's registry (admin)")
    reg = reg_parser.add_subparsers(dest="action", required=True)

    def operator(p: argparse.ArgumentParser) -> None:
        p.add_argument("--operator", "-o", required=True, help="operator id, e.g. beeline")

    p = reg.add_parser("create", parents=[common], help="create a subscriber contract")
    operator(p)
    p.add_argument("--phone", "-p", required=True)
    p.add_argument("--contract", "-c", required=True)
    p.add_argument("--activated-at", help="RFC 3339 time, default now")
    p.set_defaults(func=cmd_registry_create)
    p = reg.add_parser("get", parents=[common], help="a subscriber and the messengers it uses")
    operator(p)
    p.add_argument("--phone", "-p", required=True)
    p.set_defaults(func=cmd_registry_get)
    p = reg.add_parser("terminate", parents=[common], help="end a subscriber's contract")
    operator(p)
    p.add_argument("--phone", "-p", required=True)
    p.add_argument("--reason", choices=sorted(REASONS), default="contract-ended")
    p.set_defaults(func=cmd_registry_terminate)
    p = reg.add_parser("register", parents=[common], help="register a messenger agreement")
    operator(p)
    p.add_argument("messenger_id")
    p.add_argument("--name")
    p.set_defaults(func=cmd_registry_register)
    p = reg.add_parser("suspend", parents=[common], help="suspend a messenger agreement")
    operator(p)
    p.add_argument("messenger_id")
    p.set_defaults(func=cmd_registry_suspend)
    p = reg.add_parser("messengers", parents=[common], help="list messenger agreements")
    operator(p)
    p.set_defaults(func=cmd_registry_list)
    p = reg.add_parser("audit", parents=[common], help="the verification audit trail")
    operator(p)
    p.add_argument("--messenger-id", help="only this messenger's requests")
    p.add_argument("--outcome", help="only this outcome, e.g. IDENTIFIED, NO_AGREEMENT")
    p.add_argument("--since", help="RFC 3339 time: records at or after it")
    p.add_argument("--until", help="RFC 3339 time: records before it")
    p.add_argument("--limit", type=int, default=50, help="at most this many records")
    p.set_defaults(func=cmd_registry_audit)

    notif = sub.add_parser("notifier", help="a messenger's notices").add_subparsers(
        dest="action", required=True
    )
    p = notif.add_parser("status", parents=[common], help="delivery status (24-hour limit)")
    messenger(p)
    p.set_defaults(func=cmd_notifier_status)
    p = notif.add_parser("watch", parents=[common], help="print the messenger's events")
    messenger(p)
    p.add_argument("--after", type=int, default=0, help="cursor: show events after this seq")
    p.add_argument("--limit", type=int, default=0, help="stop after this many items")
    p.add_argument("--progress", action="store_true", help="also print progress marks")
    p.set_defaults(func=cmd_notifier_watch)
    _add_porting_commands(sub, ident, reg, common)
    _add_operations_commands(sub, reg, common)
    policy.add_commands(sub, common, sys.modules[__name__])
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.command == "up":
        raise SystemExit(
            meshlib.run_up(
                Path(args.data_dir or os.environ.get("IDMESH_DATA_DIR") or "data"),
                as_json=args.json,
            )
        )
    try:
        code = asyncio.run(args.func(args))
    except grpc.aio.AioRpcError as exc:
        hint = ""
        if exc.code() == grpc.StatusCode.UNAVAILABLE:
            # A mutual-TLS refusal happens in the handshake, before any status message: the
            # server's log says which (no certificate, unknown CA, expired).
            hint = (
                " (the service is down, or refused the connection in the TLS handshake: "
                "check --insecure against a TLS mesh, or the certificate's CA and validity)"
            )
        print(f"error: {exc.code().name}: {exc.details()}{hint}", file=sys.stderr)
        raise SystemExit(1) from None
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        code = 130
    raise SystemExit(code)


if __name__ == "__main__":
    main()
