"""Development certificates: `idmesh pki init` (a CA, and a key and certificate per identity)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from services.cli.command import Subparsers
from services.cli.connection import CliError
from services.common import pki as dev_pki
from services.common.errors import DomainError
from services.common.identity import TRUST_DOMAIN, Caller, parse_identity


async def cmd_init(args: argparse.Namespace) -> int:
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
    files = dev_pki.ensure_pki(Path(args.dir), identities, dns)
    for identity, f in files.items():
        if args.json:
            print(json.dumps({"identity": identity.uri, "cert": str(f.cert), "key": str(f.key)}))
        else:
            print(f"{identity.uri}  {f.cert}  {f.key}")
    return 0


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    pki = sub.add_parser("pki", help="development certificates").add_subparsers(
        dest="action", required=True
    )
    p = pki.add_parser("init", help="a CA and a certificate per identity (keeps what exists)")
    p.add_argument("--dir", required=True, help="the PKI folder")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "specs",
        nargs="+",
        metavar="SPEC",
        help="identity path [@dns,...], e.g. notifier@notifier operator/beeline/admin",
    )
    p.set_defaults(func=cmd_init)
