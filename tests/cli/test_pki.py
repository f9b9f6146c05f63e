"""`idmesh pki init`: a development PKI whose certificates name extra host names."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509

from services.cli.main import main


def run(*argv: str) -> int:
    with pytest.raises(SystemExit) as e:
        main(list(argv))
    return int(e.value.code or 0)


def test_pki_init_issues_a_certificate_per_identity_with_its_host_names(tmp_path: Path) -> None:
    folder = tmp_path / "pki"
    assert (
        run("pki", "init", "--dir", str(folder), "notifier@notifier", "operator/beeline/admin") == 0
    )
    cert = x509.load_pem_x509_certificate((folder / "notifier.pem").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://idmesh.local/notifier"
    ]
    assert "notifier" in san.get_values_for_type(x509.DNSName)
    assert (folder / "operator_beeline_admin-key.pem").stat().st_mode & 0o077 == 0


def test_pki_init_refuses_an_unknown_identity(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("pki", "init", "--dir", str(tmp_path), "bogus/x") == 1
    assert "unknown kind 'bogus'" in capsys.readouterr().err
