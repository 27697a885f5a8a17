"""HTTPS on the S3 listener (``server.tls``): CRUD over TLS, and mTLS refusing clients without a certificate."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.conftest import PHOTOS
from tests.support.configs import BackendSpec, GatewayConfig
from tests.support.gateway import GatewayProcess


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _issue(
    subject: str,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    server: bool = False,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    issuer_cert, issuer_key = issuer if issuer is not None else (None, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_cert.subject if issuer_cert is not None else _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer_cert is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
    elif server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    else:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256()), key


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> tuple[str, str]:
    cert_path, key_path = path.with_suffix(".crt"), path.with_suffix(".key")
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return str(cert_path), str(key_path)


class PKI:
    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        ca = _issue("s3orch test CA", None, ca=True)
        self.ca_file, _ = _write(root / "ca", *ca)
        self.server_cert, self.server_key = _write(root / "server", *_issue("127.0.0.1", ca, server=True))
        self.client_cert, self.client_key = _write(root / "client", *_issue("client", ca))
        other_ca = _issue("another CA", None, ca=True)
        self.stranger_cert, self.stranger_key = _write(root / "stranger", *_issue("stranger", other_ca))

    def client_context(self, with_cert: bool = False) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ca_file)
        if with_cert:
            context.load_cert_chain(self.client_cert, self.client_key)
        return context


@pytest.fixture
def pki(tmp_path: Path) -> PKI:
    return PKI(tmp_path / "pki")


@pytest.fixture
def start_tls_gateway(tmp_path: Path) -> Iterator[Callable[..., GatewayProcess]]:
    started: list[GatewayProcess] = []

    def start(config: GatewayConfig, context: ssl.SSLContext) -> GatewayProcess:
        proc = GatewayProcess(tmp_path / f"gw{len(started)}", config.render(), tls_context=context)
        started.append(proc)
        return proc.start()

    yield start
    for proc in started:
        proc.stop()



def _verified_client(gateway: GatewayProcess, ca_file: str, cert: tuple[str, str] | None) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=gateway.endpoint,
        aws_access_key_id=PHOTOS.access_key,
        aws_secret_access_key=PHOTOS.secret_key,
        region_name="us-east-1",
        verify=ca_file,
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1, "mode": "standard"},
            **({"client_cert": cert} if cert else {}),
        ),
    )


def test_crud_over_tls_with_min_version_1_3(
    moto_backends: Callable[..., list[BackendSpec]], start_tls_gateway: Callable[..., GatewayProcess], pki: PKI
) -> None:
    config = GatewayConfig(
        backends=moto_backends(1),
        extra_server={"tls": {"cert_file": pki.server_cert, "key_file": pki.server_key, "min_version": "1.3"}},
    )
    gateway = start_tls_gateway(config, pki.client_context())
    assert gateway.endpoint.startswith("https://")
    client = _verified_client(gateway, pki.ca_file, None)
    client.put_object(Bucket="photos", Key="tls/a.txt", Body=b"over tls")
    assert client.get_object(Bucket="photos", Key="tls/a.txt")["Body"].read() == b"over tls"
    client.delete_object(Bucket="photos", Key="tls/a.txt")
    # min_version 1.3: a TLS 1.2-only client cannot complete the handshake.
    old = pki.client_context()
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError):
        _handshake(gateway, old)


def _handshake(gateway: GatewayProcess, context: ssl.SSLContext) -> bytes:
    """One raw HTTPS request; returns the status line (raises on a refused handshake)."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
            if not data:
                raise ssl.SSLError("connection closed without an answer")
            return data.split(b"\r\n", 1)[0]


def test_mtls_refuses_clients_without_a_ca_signed_certificate(
    moto_backends: Callable[..., list[BackendSpec]], start_tls_gateway: Callable[..., GatewayProcess], pki: PKI
) -> None:
    config = GatewayConfig(
        backends=moto_backends(1),
        extra_server={
            "tls": {"cert_file": pki.server_cert, "key_file": pki.server_key, "client_ca_file": pki.ca_file}
        },
    )
    gateway = start_tls_gateway(config, pki.client_context(with_cert=True))
    # No certificate: the handshake (or the first read after it, with TLS 1.3) fails.
    with pytest.raises((ssl.SSLError, ConnectionError)):
        _handshake(gateway, pki.client_context())
    # A certificate from another CA: refused too.
    stranger = pki.client_context()
    stranger.load_cert_chain(pki.stranger_cert, pki.stranger_key)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        _handshake(gateway, stranger)
    # The CA-signed client certificate works, with boto3 as users run it.
    assert _handshake(gateway, pki.client_context(with_cert=True)).startswith(b"HTTP/1.1 200")
    client = _verified_client(gateway, pki.ca_file, (pki.client_cert, pki.client_key))
    client.put_object(Bucket="photos", Key="mtls/a.txt", Body=b"mutual")
    assert client.get_object(Bucket="photos", Key="mtls/a.txt")["Body"].read() == b"mutual"
    bare = _verified_client(gateway, pki.ca_file, None)
    with pytest.raises(Exception) as refused:
        bare.head_bucket(Bucket="photos")
    assert "SSL" in repr(refused.value) or "Connection" in repr(refused.value)


def _served_certificate(gateway: GatewayProcess, context: ssl.SSLContext) -> x509.Certificate:
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def test_sighup_serves_a_renewed_certificate_to_new_connections_and_warns_of_expiry(
    moto_backends: Callable[..., list[BackendSpec]], start_tls_gateway: Callable[..., GatewayProcess], pki: PKI,
    tmp_path: Path,
) -> None:
    import json
    import os
    import signal

    from tests.support.polling import wait_for

    config = GatewayConfig(
        backends=moto_backends(1),
        extra_server={"tls": {"cert_file": pki.server_cert, "key_file": pki.server_key}},
    )
    gateway = start_tls_gateway(config, pki.client_context())
    first = _served_certificate(gateway, pki.client_context())
    # The test certificates are valid for a day: less than 24h from now.
    assert "expires within 24h" in gateway.log_text()

    # Renewal: new key and certificate (same CA) written over the files the listener uses.
    ca_cert = x509.load_pem_x509_certificate(Path(pki.ca_file).read_bytes())
    ca_key = serialization.load_pem_private_key(Path(pki.ca_file).with_suffix(".key").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    renewed, key = _issue("127.0.0.1", (ca_cert, ca_key), server=True)
    staging = tmp_path / "renewed"
    cert_file, key_file = _write(staging, renewed, key)
    os.replace(cert_file, pki.server_cert)
    os.replace(key_file, pki.server_key)
    assert gateway.proc is not None
    os.kill(gateway.proc.pid, signal.SIGHUP)

    def reloaded() -> bool:
        return any(
            json.loads(line).get("msg") == "Reloaded TLS certificate"
            for line in gateway.log_text().splitlines()
            if line.startswith("{")
        )

    assert wait_for(reloaded, 15), gateway.log_text()[-2000:]
    second = _served_certificate(gateway, pki.client_context())
    assert second.serial_number == renewed.serial_number != first.serial_number
    assert _handshake(gateway, pki.client_context()).startswith(b"HTTP/1.1 200")
