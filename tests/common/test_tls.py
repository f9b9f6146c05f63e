"""Mutual TLS: the caller is who its certificate says; anything else is refused."""

from __future__ import annotations

import stat
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from idmesh.registry.v1 import registry_pb2, registry_pb2_grpc

from services.common.channels import open_channel
from services.common.identity import IDENTITY_METADATA_KEY, Caller, Kind, Role, current_caller
from services.common.interceptors import ErrorTable
from services.common.pki import create_ca, ensure_pki, issue, load_ca
from services.common.server import GrpcServer, service_name
from services.common.tls import CredentialsError, TlsFiles

SERVER = Caller(Kind.OPERATOR, "beeline")
ALPHA = Caller(Kind.MESSENGER, "alpha")


class WhoAmI(registry_pb2_grpc.RegistryServiceServicer):
    def __init__(self) -> None:
        self.callers: list[Caller | None] = []

    async def VerifySubscriber(self, request: Any, context: Any) -> Any:
        caller = current_caller()
        self.callers.append(caller)
        return registry_pb2.VerifySubscriberResponse(operator_id=caller.uri if caller else "")


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    ensure_pki(tmp_path / "pki", [SERVER, ALPHA])
    return tmp_path / "pki"


@pytest.fixture
async def tls_server(pki: Path) -> AsyncIterator[tuple[GrpcServer, WhoAmI]]:
    files = ensure_pki(pki, [SERVER])[SERVER]
    server = GrpcServer(name="t", bind="127.0.0.1:0", errors=ErrorTable({}), tls=files)
    servicer = WhoAmI()
    server.add(
        registry_pb2_grpc.add_RegistryServiceServicer_to_server,
        servicer,
        service_name(registry_pb2.DESCRIPTOR, "RegistryService"),
    )
    await server.start()
    yield server, servicer
    await server.stop(None)


async def call(port: int | None, tls: TlsFiles | None, **kwargs: Any) -> Any:
    async with open_channel(f"127.0.0.1:{port}", identity=None, tls=tls) as channel:
        stub = registry_pb2_grpc.RegistryServiceStub(channel)
        return await stub.VerifySubscriber(
            registry_pb2.VerifySubscriberRequest(), timeout=5, **kwargs
        )


async def test_the_caller_is_the_identity_in_its_certificate(pki: Path, tls_server: Any) -> None:
    server, servicer = tls_server
    files = ensure_pki(pki, [ALPHA])[ALPHA]
    # A caller cannot name itself: metadata claiming another identity is ignored.
    reply = await call(
        server.port,
        files,
        metadata=((IDENTITY_METADATA_KEY, Caller(Kind.OPERATOR, "beeline", Role.ADMIN).uri),),
    )
    assert reply.operator_id == ALPHA.uri
    assert servicer.callers == [ALPHA]


async def test_a_client_without_a_certificate_is_refused_at_the_handshake(
    pki: Path, tls_server: Any
) -> None:
    server, servicer = tls_server
    credentials = grpc.ssl_channel_credentials(root_certificates=(pki / "ca.pem").read_bytes())
    async with grpc.aio.secure_channel(f"127.0.0.1:{server.port}", credentials) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await registry_pb2_grpc.RegistryServiceStub(channel).VerifySubscriber(
                registry_pb2.VerifySubscriberRequest(), timeout=5
            )
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert servicer.callers == []


async def test_a_plaintext_client_is_refused(tls_server: Any) -> None:
    server, servicer = tls_server
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await call(server.port, None)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert servicer.callers == []


async def test_a_certificate_from_another_ca_is_refused(
    tmp_path: Path, pki: Path, tls_server: Any
) -> None:
    server, servicer = tls_server
    rogue = ensure_pki(tmp_path / "rogue", [ALPHA])[ALPHA]
    # It trusts the real CA (to reach the server) but presents a certificate of its own CA.
    mixed = TlsFiles(ca=pki / "ca.pem", cert=rogue.cert, key=rogue.key)
    with pytest.raises(CredentialsError, match="not issued by the CA"):
        mixed.check()
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await call(server.port, mixed)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert servicer.callers == []


async def test_an_expired_certificate_is_refused(pki: Path, tls_server: Any) -> None:
    server, servicer = tls_server
    old = datetime.now(UTC) - timedelta(days=30)
    expired = issue(pki, ALPHA, load_ca(pki), days=1, not_before=old, stem="expired")
    with pytest.raises(CredentialsError, match="expired"):
        expired.check()
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await call(server.port, expired)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert servicer.callers == []


def test_a_key_that_is_not_the_certificates_is_reported(pki: Path) -> None:
    files = ensure_pki(pki, [SERVER, ALPHA])
    mixed = TlsFiles(ca=files[ALPHA].ca, cert=files[ALPHA].cert, key=files[SERVER].key)
    with pytest.raises(CredentialsError, match="does not belong"):
        mixed.check()
    assert files[ALPHA].check() == ALPHA.uri


def test_private_keys_are_written_owner_only_and_kept_across_runs(tmp_path: Path) -> None:
    folder = tmp_path / "pki"
    first = ensure_pki(folder, [ALPHA])[ALPHA]
    for key in (first.key, folder / "ca-key.pem"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    cert = first.cert.read_bytes()
    assert ensure_pki(folder, [ALPHA])[ALPHA].cert.read_bytes() == cert


def test_a_new_ca_does_not_trust_old_certificates(tmp_path: Path) -> None:
    folder = tmp_path / "pki"
    files = ensure_pki(folder, [ALPHA])[ALPHA]
    create_ca(folder)  # the CA is replaced: the old certificate no longer checks
    with pytest.raises(CredentialsError):
        files.check()


async def test_probes_get_health_in_plaintext_on_a_separate_port_and_nothing_else(
    pki: Path,
) -> None:
    files = ensure_pki(pki, [SERVER])[SERVER]
    server = GrpcServer(
        name="t", bind="127.0.0.1:0", errors=ErrorTable({}), tls=files, health_bind="127.0.0.1:0"
    )
    server.add(
        registry_pb2_grpc.add_RegistryServiceServicer_to_server,
        WhoAmI(),
        service_name(registry_pb2.DESCRIPTOR, "RegistryService"),
    )
    await server.start()
    await server.set_serving()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.health_port}") as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="idmesh.registry.v1.RegistryService"),
                timeout=5,
            )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await registry_pb2_grpc.RegistryServiceStub(channel).VerifySubscriber(
                    registry_pb2.VerifySubscriberRequest(), timeout=5
                )
            assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        await server.stop(None)


@pytest.mark.parametrize("named", [True, False])
async def test_a_server_dialled_by_address_is_trusted_when_its_certificate_names_it(
    tmp_path: Path, named: bool
) -> None:
    """A replica on a host of its own (services/localmesh/netns.py) is dialled at its host's
    address: its certificate names it as an IP SAN, or the client refuses the handshake."""
    folder = tmp_path / "pki"
    files = ensure_pki(folder, [SERVER, ALPHA], {SERVER: ["127.0.0.2"] if named else []})
    server = GrpcServer(name="t", bind="127.0.0.2:0", errors=ErrorTable({}), tls=files[SERVER])
    server.add(
        registry_pb2_grpc.add_RegistryServiceServicer_to_server,
        WhoAmI(),
        service_name(registry_pb2.DESCRIPTOR, "RegistryService"),
    )
    await server.start()
    try:
        async with open_channel(f"127.0.0.2:{server.port}", identity=None, tls=files[ALPHA]) as ch:
            call = registry_pb2_grpc.RegistryServiceStub(ch).VerifySubscriber(
                registry_pb2.VerifySubscriberRequest(), timeout=5
            )
            if named:
                assert (await call).operator_id == ALPHA.uri
            else:
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await call
                assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(None)
