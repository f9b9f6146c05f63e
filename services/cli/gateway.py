"""A messenger's gateway, as the messenger's admin: `idmesh gateway ...` (import-ported: the
ported-numbers table from CSV; route: which operator the gateway would ask for a number)."""

from __future__ import annotations

import argparse

from idmesh.common.v1 import bulk_pb2
from idmesh.gateway.v1 import gateway_pb2

from services.cli import csv_import
from services.cli.command import Subparsers, bounded_int, messenger_option, unary
from services.cli.connection import GATEWAY_ADMIN

PORTED_NUMBERS_CSV = csv_import.CsvFormat(
    columns=("phone_number", "recipient_operator_id", "ported_at"),
    time_column="ported_at",
    # The mode in both fields that name it, so that gateways of every age read it.
    new_request=lambda all_or_nothing: (
        gateway_pb2.ImportPortedNumbersRequest(
            all_or_nothing=True, mode=bulk_pb2.IMPORT_MODE_ALL_OR_NOTHING
        )
        if all_or_nothing
        else gateway_pb2.ImportPortedNumbersRequest(mode=bulk_pb2.IMPORT_MODE_VALID_ROWS)
    ),
    retry_hint="import with --valid-rows",
)


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    gw = sub.add_parser("gateway", help="a messenger's gateway (admin)").add_subparsers(
        dest="action", required=True
    )
    p = gw.add_parser(
        "import-ported", parents=[common], help="load a ported-numbers CSV into the gateway"
    )
    messenger_option(p)
    p.add_argument("file", help="CSV: phone_number,recipient_operator_id,ported_at")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--all-or-nothing",
        action="store_true",
        help="one invalid row and nothing is stored (the default)",
    )
    mode.add_argument(
        "--valid-rows", action="store_true", help="store the valid rows even if some are invalid"
    )
    p.add_argument(
        "--batch-size",
        type=bounded_int(1, csv_import.MAX_BATCH),
        default=1000,
        help=f"rows per message (1..{csv_import.MAX_BATCH})",
    )
    p.set_defaults(
        func=csv_import.import_command(
            GATEWAY_ADMIN,
            "ImportPortedNumbers",
            PORTED_NUMBERS_CSV,
            all_or_nothing=lambda a: not a.valid_rows,
            batch=lambda a: int(a.batch_size),
        )
    )

    p = gw.add_parser("route", parents=[common], help="which operator the gateway would ask")
    messenger_option(p)
    p.add_argument("--phone", "-p", required=True)
    p.set_defaults(
        func=unary(
            GATEWAY_ADMIN,
            "ResolveOperator",
            lambda a: gateway_pb2.ResolveOperatorRequest(phone_number=a.phone),
        )
    )
