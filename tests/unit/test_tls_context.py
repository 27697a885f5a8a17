"""server.tls problems are operator errors found at start-up, not per connection."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from s3orch.http.tls import TLSSetupError, server_context


@dataclass
class _TLS:
    cert_file: str
    key_file: str
    min_version: str = "1.2"
    client_ca_file: str = ""


def test_missing_certificate_file_is_a_setup_error(tmp_path: Path) -> None:
    with pytest.raises(TLSSetupError, match="cannot read"):
        server_context(_TLS(str(tmp_path / "none.crt"), str(tmp_path / "none.key")))


def test_file_without_a_pem_certificate_is_a_setup_error(tmp_path: Path) -> None:
    cert = tmp_path / "server.crt"
    cert.write_text("not a certificate")
    with pytest.raises(TLSSetupError, match="no PEM certificate"):
        server_context(_TLS(str(cert), str(tmp_path / "server.key")))
