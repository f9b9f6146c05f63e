"""Where a command connects and as whom: the running mesh's layout (DATA/mesh.json) or
--address, and the TLS files of the identity the command acts in (--ca/--cert/--key, else the
mesh's development PKI)."""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from idmesh.gateway.v1 import gateway_pb2_grpc
from idmesh.notifier.v1 import notifier_pb2_grpc
from idmesh.registry.v1 import registry_pb2_grpc

from services.common import pki
from services.common.channels import open_channel
from services.common.identity import Caller, Kind, Role
from services.common.tls import CredentialsError, TlsFiles
from services.localmesh import mesh as meshlib
from services.localmesh.spec import MeshError


class CliError(Exception):
    """A refusal of the CLI itself (no mesh, a bad file): printed as `error: <message>`."""


def data_dir(args: argparse.Namespace) -> Path:
    return Path(getattr(args, "data_dir", None) or os.environ.get("IDMESH_DATA_DIR") or "data")


def layout(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The services of the running mesh."""
    try:
        return meshlib.load_layout(data_dir(args))
    except MeshError as exc:
        raise CliError(str(exc)) from None


def service_info(args: argparse.Namespace, service: str) -> dict[str, Any]:
    """One service of the running mesh, by its name (e.g. registry-beeline)."""
    services = layout(args)
    if service not in services:
        raise CliError(f"the mesh has no service {service!r}: one of {', '.join(services)}")
    return services[service]


def find_address(args: argparse.Namespace, kind: str, key: str | None, value: str | None) -> str:
    """--address, else the address of the mesh's service of this kind (and key == value)."""
    if args.address:
        return str(args.address)
    for info in layout(args).values():
        if info["kind"] == kind and (key is None or info.get(key) == value):
            return str(info["address"])
    raise CliError(f"the mesh at {data_dir(args)} has no {kind}" + (f" {value}" if value else ""))


def credentials(args: argparse.Namespace, identity: Caller) -> TlsFiles | None:
    """The TLS files to act as identity: --ca/--cert/--key (or IDMESH_TLS_*), else the running
    mesh's PKI; None with --insecure or on a plaintext mesh. Checked before use, so an expired
    or foreign certificate is reported here rather than as a closed connection."""
    if args.insecure:
        return None
    ca = args.ca or os.environ.get("IDMESH_TLS_CA")
    cert = args.cert or os.environ.get("IDMESH_TLS_CERT")
    key = args.key or os.environ.get("IDMESH_TLS_KEY")
    if ca or cert or key:
        if not (cert and key):
            raise CliError(
                "give both --cert and --key (or IDMESH_TLS_CERT/KEY); --ca defaults to the "
                "running mesh's CA"
            )
        files = TlsFiles(Path(ca) if ca else _mesh_ca(args), Path(cert), Path(key))
    else:
        try:
            pki_dir = meshlib.load_pki_dir(data_dir(args))
        except MeshError as exc:
            raise CliError(f"{exc}; or pass --ca/--cert/--key, or --insecure") from None
        if pki_dir is None:
            return None
        files = pki.files_for(pki_dir, identity)
    _check_readable(files)
    try:
        files.check()
    except CredentialsError as exc:
        raise CliError(f"cannot act as {identity}: {exc}") from None
    return files


def _check_readable(files: TlsFiles) -> None:
    """Each TLS file exists and holds what its option names, else a CliError saying which."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    def loads(option: str, path: Path, what: str, load: Callable[[bytes], object]) -> None:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise CliError(f"{option} {path}: no such file") from None
        except IsADirectoryError:
            raise CliError(f"{option} {path}: a folder, not a file") from None
        except OSError as exc:
            raise CliError(f"{option} {path}: cannot read it ({exc.strerror})") from None
        try:
            load(data)
        except (ValueError, TypeError):
            raise CliError(f"{option} {path}: not a PEM {what}") from None

    loads("--ca", files.ca, "certificate", x509.load_pem_x509_certificate)
    loads("--cert", files.cert, "certificate", x509.load_pem_x509_certificate)
    loads(
        "--key",
        files.key,
        "private key without a password",
        lambda data: serialization.load_pem_private_key(data, password=None),
    )


def _mesh_ca(args: argparse.Namespace) -> Path:
    """The running mesh's CA certificate, for --cert/--key given without --ca."""
    try:
        pki_dir = meshlib.load_pki_dir(data_dir(args))
    except MeshError as exc:
        raise CliError(f"{exc}; or pass --ca (or IDMESH_TLS_CA)") from None
    if pki_dir is None:
        raise CliError(f"the mesh at {data_dir(args)} runs without TLS: pass --ca")
    return pki_dir / pki.CA_FILE


def open_to(args: argparse.Namespace, address: str, identity: Caller) -> grpc.aio.Channel:
    """A channel to address, acting as identity."""
    return open_channel(address, identity=identity, tls=credentials(args, identity))


@dataclass(frozen=True)
class Target:
    """A service API a command calls, and the identity it acts in there."""

    kind: str  # the service's kind in mesh.json
    stub: Callable[[grpc.aio.Channel], Any]
    identity: Callable[[argparse.Namespace], Caller]
    key: str | None = None  # the mesh.json field naming the instance (operator_id, ...)
    instance: Callable[[argparse.Namespace], str] | None = None  # its value from the arguments


@asynccontextmanager
async def connect(args: argparse.Namespace, target: Target) -> AsyncIterator[Any]:
    """The target's stub on a channel that is closed on leaving."""
    instance = target.instance(args) if target.instance else None
    address = find_address(args, target.kind, target.key, instance)
    async with open_to(args, address, target.identity(args)) as channel:
        yield target.stub(channel)


GATEWAY = Target(
    "messenger_gateway",
    gateway_pb2_grpc.GatewayServiceStub,
    lambda a: Caller(Kind.MESSENGER, a.messenger, Role.FRONTEND),
    "messenger_id",
    lambda a: str(a.messenger),
)
"""A messenger's gateway, as the messenger's front end."""

GATEWAY_ADMIN = Target(
    "messenger_gateway",
    gateway_pb2_grpc.GatewayAdminServiceStub,
    lambda a: Caller(Kind.MESSENGER, a.messenger, Role.ADMIN),
    "messenger_id",
    lambda a: str(a.messenger),
)
"""A messenger's gateway, as the messenger's admin."""

REGISTRY_ADMIN = Target(
    "operator_registry",
    registry_pb2_grpc.RegistryAdminServiceStub,
    lambda a: Caller(Kind.OPERATOR, a.operator, Role.ADMIN),
    "operator_id",
    lambda a: str(a.operator),
)
"""An operator's registry, as the operator's admin."""

REGISTRY_AS_MESSENGER = Target(
    "operator_registry",
    registry_pb2_grpc.RegistryServiceStub,
    lambda a: Caller(Kind.MESSENGER, a.as_messenger),
    "operator_id",
    lambda a: str(a.operator),
)
"""An operator's registry, as a messenger's gateway asks it (--as-messenger)."""

NOTIFIER = Target(
    "notifier",
    notifier_pb2_grpc.NotifierServiceStub,
    lambda a: Caller(Kind.MESSENGER, a.messenger),
)
"""The notifier, as a messenger."""
