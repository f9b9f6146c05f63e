"""Mutual TLS: credentials from files, and the caller's identity from the peer certificate.

Every connection is mutual TLS unless the explicit development switch is on: the server requires
a client certificate issued by the idmesh CA (the TLS handshake refuses a missing, foreign or
expired one before any RPC), and the caller's identity is the certificate's URI SAN
(spiffe://idmesh.local/...), which gRPC exposes as the auth context's `peer_spiffe_id`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from services.common.errors import Unauthenticated
from services.common.identity import Caller, parse_identity


class CredentialsError(Exception):
    """This process's own credentials cannot work; the message says why."""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """The files a process needs for mutual TLS: the trusted CA, its certificate and key."""

    ca: Path
    cert: Path
    key: Path

    def read(self) -> tuple[bytes, bytes, bytes]:
        return self.ca.read_bytes(), self.cert.read_bytes(), self.key.read_bytes()

    def check(self, *, now: datetime | None = None) -> str:
        """Check the certificate before using it, so that a person learns what is wrong (the
        peer's handshake would only close the connection): it must be in force, issued by the
        CA, match the key, and carry an idmesh identity. Returns that identity URI."""
        ca_pem, cert_pem, key_pem = self.read()
        try:
            ca = x509.load_pem_x509_certificate(ca_pem)
            cert = x509.load_pem_x509_certificate(cert_pem)
            key = serialization.load_pem_private_key(key_pem, password=None)
        except ValueError as exc:
            raise CredentialsError(f"cannot read the TLS files {self}: {exc}") from None
        moment = now or datetime.now(UTC)
        if cert.not_valid_after_utc < moment:
            raise CredentialsError(
                f"certificate {self.cert} expired at {cert.not_valid_after_utc.isoformat()}: "
                "issue a new one"
            )
        if cert.not_valid_before_utc > moment:
            raise CredentialsError(
                f"certificate {self.cert} is not valid before "
                f"{cert.not_valid_before_utc.isoformat()}"
            )
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, Exception) as exc:  # InvalidSignature has no message
            raise CredentialsError(
                f"certificate {self.cert} was not issued by the CA in {self.ca} "
                f"({type(exc).__name__}): use a certificate from that CA"
            ) from None
        if key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ) != cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ):
            raise CredentialsError(f"key {self.key} does not belong to certificate {self.cert}")
        identity = certificate_identity(cert)
        if identity is None:
            raise CredentialsError(
                f"certificate {self.cert} carries no idmesh identity (a URI SAN "
                "spiffe://idmesh.local/...)"
            )
        return identity

    def server_credentials(self) -> grpc.ServerCredentials:
        ca, cert, key = self.read()
        return grpc.ssl_server_credentials(
            [(key, cert)], root_certificates=ca, require_client_auth=True
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        ca, cert, key = self.read()
        return grpc.ssl_channel_credentials(
            root_certificates=ca, private_key=key, certificate_chain=cert
        )


def certificate_identity(cert: x509.Certificate) -> str | None:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        if uri.startswith("spiffe://"):
            return str(uri)
    return None


def tls_identity(context: grpc.aio.ServicerContext[Any, Any], metadata: object = None) -> Caller:
    """The identity resolver under mutual TLS: the peer certificate's URI SAN (what gRPC names
    the auth context's `peer_spiffe_id`: the certificate's one URI, a spiffe:// one). Metadata
    is never consulted: a caller cannot name itself.

    Read from the call's peer identities (the certificate's subject alternative names, which
    gRPC keeps with the connection), not from the whole auth context, which gRPC copies into a
    new dict, the peer's PEM certificate included, on every call."""
    uris = [name for name in context.peer_identities() or () if b"://" in name]
    if len(uris) != 1 or not uris[0].startswith(b"spiffe://"):
        raise Unauthenticated(
            "the client certificate carries no idmesh identity (one URI SAN "
            "spiffe://idmesh.local/...)"
        )
    return _identity_of(uris[0])


@functools.lru_cache(maxsize=1024)
def _identity_of(spiffe_id: bytes) -> Caller:
    """The Caller a certificate's SPIFFE id names, parsed once per id (a Caller is immutable;
    a refusal raises every time: lru_cache keeps no exceptions)."""
    return parse_identity(spiffe_id.decode())
