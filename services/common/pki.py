"""A development PKI with the `cryptography` library: a CA, and a key and certificate per identity.

Every certificate carries its idmesh identity as a URI SAN (spiffe://idmesh.local/...), plus
DNS localhost and IP 127.0.0.1 so that the same certificate serves as a server certificate on
the local mesh. Keys are written 0600. `ensure_pki(folder, identities)` creates what is missing
and keeps what exists, so `make up` reuses its PKI across runs.

Layout under the folder:  ca.pem, ca-key.pem, <name>.pem, <name>-key.pem
where <name> is the identity's path with '/' replaced by '_' (messenger_alpha_frontend).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from services.common.identity import TRUST_DOMAIN, Caller
from services.common.tls import TlsFiles

CA_FILE = "ca.pem"
CA_KEY_FILE = "ca-key.pem"
_PREFIX = f"spiffe://{TRUST_DOMAIN}/"


def file_stem(identity: Caller) -> str:
    return identity.uri.removeprefix(_PREFIX).replace("/", "_")


def files_for(folder: Path, identity: Caller) -> TlsFiles:
    stem = file_stem(identity)
    return TlsFiles(folder / CA_FILE, folder / f"{stem}.pem", folder / f"{stem}-key.pem")


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(tmp, 0o600)
    tmp.replace(path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def create_ca(
    folder: Path, *, common_name: str = "idmesh development CA", days: int = 3650
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    _write_private(folder / CA_KEY_FILE, _key_pem(key))
    (folder / CA_FILE).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def load_ca(folder: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate((folder / CA_FILE).read_bytes())
    key = serialization.load_pem_private_key((folder / CA_KEY_FILE).read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return cert, key


def issue(
    folder: Path,
    identity: Caller,
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    *,
    days: int = 825,
    not_before: datetime | None = None,
    stem: str | None = None,
    dns_names: Iterable[str] = (),
) -> TlsFiles:
    """Issue a certificate for identity signed by ca, written under folder. Besides localhost
    and 127.0.0.1 it names dns_names, the host names peers dial it by (Compose services) or
    their IP addresses (a local mesh's hosts in network namespaces): an address is an IP SAN."""
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    start = not_before or datetime.now(UTC) - timedelta(minutes=5)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, file_stem(identity))]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=days))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.UniformResourceIdentifier(identity.uri),
                    x509.DNSName("localhost"),
                    *(_subject_name(name) for name in dns_names),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    name = stem or file_stem(identity)
    files = TlsFiles(folder / CA_FILE, folder / f"{name}.pem", folder / f"{name}-key.pem")
    _write_private(files.key, _key_pem(key))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return files


def _subject_name(name: str) -> x509.GeneralName:
    """An IP SAN for an address (which a TLS client checks when it dials one), else DNS."""
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def ensure_pki(
    folder: Path,
    identities: Iterable[Caller],
    dns_names: Mapping[Caller, Sequence[str]] | None = None,
) -> dict[Caller, TlsFiles]:
    """The CA and a certificate per identity under folder, creating only what is missing."""
    if (folder / CA_FILE).exists() and (folder / CA_KEY_FILE).exists():
        ca = load_ca(folder)
    else:
        ca = create_ca(folder)
    result: dict[Caller, TlsFiles] = {}
    for identity in identities:
        files = files_for(folder, identity)
        if not (files.cert.exists() and files.key.exists()):
            files = issue(folder, identity, ca, dns_names=(dns_names or {}).get(identity, ()))
        result[identity] = files
    return result
