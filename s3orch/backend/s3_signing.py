"""SigV4 for one backend's requests, straight to the request's header block (issue 20).

:func:`s3orch.s3.sigv4.sign_headers` is the general signer: it re-parses the URL it is
given, re-derives the date strings and looks the signing key up by a hash of the secret,
and the client then builds a Twisted ``Headers`` the lean connection serialises again.
A backend signs thousands of requests a second for one host, one region and one key, so
:class:`BackendSigner` keeps what repeats (the date and scope of the current second, the
signing key of the current day) and writes the signed headers as the bytes that go on
the wire.  The canonical form is the shared one (``canonical_query`` for query strings,
the same header-value folding); ``tests/unit/test_backend_signing.py`` checks every
signature against ``sign_headers``.

Header values never carry CR or LF here: a value with one is refused
(:class:`~s3orch.backend.interface.BackendError`), not folded, so nothing a key or token
holds can add a header line.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from s3orch.backend.credentials import Credentials
from s3orch.backend.interface import BackendError
from s3orch.s3.sigv4 import (
    ALGORITHM,
    canonical_headers,
    canonical_query,
    derive_signing_key,
    format_amz_date,
    parse_query,
)

__all__ = ["BackendSigner"]

class BackendSigner:
    """Signs requests to one host (the ``Host`` header value) in one region; ``backend``
    names the backend in errors."""

    __slots__ = (
        "_backend", "_host", "_host_line", "_region", "_service", "_second", "_amz_date", "_date", "_scope", "_key"
    )

    def __init__(self, host: str, region: str, service: str = "s3", *, backend: str = "") -> None:
        self._backend = backend
        self._host = host
        self._host_line = f"Host: {host}\r\n"
        self._region = region
        self._service = service
        self._second = -1
        self._amz_date = ""
        self._date = ""
        self._scope = ""
        #: (secret, date, signing key) of the last request: one day's key per secret.
        self._key: tuple[str, str, bytes] | None = None

    def _clock(self, now: float) -> None:
        second = int(now)
        if second != self._second:
            self._amz_date = format_amz_date(now)
            date = self._amz_date[:8]
            if date != self._date:
                self._date = date
                self._scope = f"{date}/{self._region}/{self._service}/aws4_request"
            self._second = second

    def _signing_key(self, secret: str) -> bytes:
        cached = self._key
        if cached is not None and cached[1] == self._date and cached[0] == secret:
            return cached[2]
        key = derive_signing_key(secret, self._date, self._region, self._service)
        self._key = (secret, self._date, key)
        return key

    def header_block(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str],
        payload_hash: str,
        credentials: Credentials,
        now: float,
        unsigned: Mapping[str, str],
    ) -> bytes:
        """``Name: value\\r\\n`` lines of a request to ``target`` (path and raw query, already
        URI-encoded): Host, ``headers`` (lower-case names, all signed), the session token
        if any, x-amz-date, x-amz-content-sha256, Authorization, then ``unsigned``
        (a trace's ``traceparent``)."""
        self._clock(now)
        amz_date = self._amz_date
        signed_values = dict(headers)
        if credentials.session_token:  # temporary keys: the token is sent, and signed
            signed_values["x-amz-security-token"] = credentials.session_token
        signed_values["host"] = self._host
        signed_values["x-amz-content-sha256"] = payload_hash
        signed_values["x-amz-date"] = amz_date
        names = sorted(signed_values)
        canonical = "".join([f"{name}:{signed_values[name].strip()}\n" for name in names])
        if "\t" in canonical or "  " in canonical:  # whitespace runs inside a value: SigV4 folds them
            canonical = canonical_headers({name: [signed_values[name]] for name in names}, names)
        path, _, query = target.partition("?")
        signed_names = ";".join(names)
        creq = "\n".join(
            (
                method.upper(),
                path,
                canonical_query(parse_query(query.encode("utf-8"))) if query else "",
                canonical,
                signed_names,
                payload_hash,
            )
        )
        digest = hashlib.sha256(creq.encode("utf-8", "surrogateescape")).hexdigest()
        signature = hmac.digest(
            self._signing_key(credentials.secret_access_key),
            f"{ALGORITHM}\n{amz_date}\n{self._scope}\n{digest}".encode(),
            "sha256",
        ).hex()
        del signed_values["host"]
        lines = [self._host_line]
        lines += [f"{name}: {value}\r\n" for name, value in signed_values.items()]
        lines.append(
            f"Authorization: {ALGORITHM} Credential={credentials.access_key_id}/{self._scope}, "
            f"SignedHeaders={signed_names}, Signature={signature}\r\n"
        )
        if unsigned:
            lines += [f"{name}: {value}\r\n" for name, value in unsigned.items()]
        block = "".join(lines)
        if block.count("\n") != len(lines) or block.count("\r") != len(lines):
            raise BackendError("a request header value holds a line break", backend=self._backend)
        return block.encode("latin-1")
