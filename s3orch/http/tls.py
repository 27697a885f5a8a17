"""TLS for the S3 listener (``server.tls``): certificate, minimum version, optional mTLS."""

from __future__ import annotations

import re
from typing import Any

from OpenSSL import crypto
from twisted.internet import ssl
from twisted.internet.interfaces import IOpenSSLContextFactory
from zope.interface import implementer

from s3orch.config.model import TLSConfig

_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


class TLSSetupError(Exception):
    """A certificate, key or CA file could not be read or does not fit."""


def _certificates(path: str) -> list[crypto.X509]:
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise TLSSetupError(f"cannot read {path}: {exc}") from exc
    blocks = _PEM_CERT.findall(data)
    if not blocks:
        raise TLSSetupError(f"{path}: no PEM certificate found")
    try:
        return [crypto.load_certificate(crypto.FILETYPE_PEM, block) for block in blocks]
    except crypto.Error as exc:
        raise TLSSetupError(f"{path}: invalid certificate: {exc}") from exc


def server_context(tls: TLSConfig) -> ssl.CertificateOptions:
    """Context factory for ``server.tls``: certificate chain, key, min_version, client CA (mTLS).

    With ``client_ca_file`` set, a client must present a certificate signed by one of
    those CAs, or the handshake fails (Go's RequireAndVerifyClientCert).
    """
    chain = _certificates(tls.cert_file)
    try:
        with open(tls.key_file, "rb") as handle:
            key = crypto.load_privatekey(crypto.FILETYPE_PEM, handle.read())
    except OSError as exc:
        raise TLSSetupError(f"cannot read {tls.key_file}: {exc}") from exc
    except crypto.Error as exc:
        raise TLSSetupError(f"{tls.key_file}: invalid private key: {exc}") from exc
    minimum = _VERSIONS.get(tls.min_version)
    if minimum is None:
        raise TLSSetupError(f"server.tls.min_version must be '1.2' or '1.3', not {tls.min_version!r}")
    options: dict[str, Any] = {
        "privateKey": key,
        "certificate": chain[0],
        "extraCertChain": chain[1:],
        "raiseMinimumTo": minimum,
    }
    if tls.client_ca_file:
        # A trust root makes CertificateOptions ask for, require and verify the client's certificate.
        authorities = _certificates(tls.client_ca_file)
        options["trustRoot"] = ssl.trustRootFromCertificates(
            [ssl.Certificate(cert) for cert in authorities]
        )
    try:
        context = ssl.CertificateOptions(**options)
        context.getContext()  # fail now (key/cert mismatch), not on each connection
    except Exception as exc:  # OpenSSL reports a mismatch as a generic SSL error
        raise TLSSetupError(f"server.tls: {exc}") from exc
    return context


#: A certificate that expires within this many seconds is warned about (at start and on reload).
EXPIRY_WARNING = 24 * 3600.0


def seconds_to_expiry(tls: TLSConfig, now: float) -> float:
    """Seconds from ``now`` until the leaf certificate of ``tls.cert_file`` expires (negative: expired)."""
    leaf = _certificates(tls.cert_file)[0]
    not_after = leaf.to_cryptography().not_valid_after_utc.timestamp()
    return not_after - now


@implementer(IOpenSSLContextFactory)
class ReloadableContext:
    """The S3 listener's context factory: each new connection gets the current context.

    Twisted asks an old-style context factory for its context once per connection, so
    :meth:`swap` (a SIGHUP reload of a renewed certificate) reaches new connections only;
    a connection already established keeps the certificate it was served.
    """

    def __init__(self, options: ssl.CertificateOptions) -> None:
        self.options = options

    def swap(self, options: ssl.CertificateOptions) -> None:
        self.options = options

    def getContext(self) -> Any:
        return self.options.getContext()
