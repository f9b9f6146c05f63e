"""`idmesh`: run the local mesh and drive every service through its gRPC API.

Addresses come from the running mesh (DATA/mesh.json, DATA from --data-dir or IDMESH_DATA_DIR,
default ./data) unless --address is given. The CLI presents the identity of the role it acts
in: a messenger's front end for identification, an operator's admin for the registry, a
messenger for the notifier. A refused call prints one line, `error: CODE (REASON): message`, and
exits 1.

The commands live in one module per subject (a command group); adding a group is one entry in
GROUPS.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import sys

import grpc

from services.cli import gateway, identify, notifier, ops, pki, policy, registry
from services.cli.command import Group, commands_by_method, common_options
from services.cli.connection import CliError
from services.cli.output import rpc_error_line

__all__ = ["GROUPS", "CliError", "build_parser", "main"]

GROUPS: tuple[Group, ...] = (ops, pki, identify, registry, notifier, gateway, policy)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="idmesh", description=(__doc__ or "").split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    common = common_options()
    for group in GROUPS:
        group.register(sub, common)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if inspect.iscoroutinefunction(args.func):
            code = asyncio.run(args.func(args))
        else:
            code = args.func(args)
    except grpc.aio.AioRpcError as exc:
        print(f"error: {rpc_error_line(exc, commands_by_method(parser))}", file=sys.stderr)
        raise SystemExit(1) from None
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        code = 130
    raise SystemExit(code)


if __name__ == "__main__":
    main()
