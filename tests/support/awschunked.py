"""Build aws-chunked request bodies the way AWS SDKs do (tests and benchmarks).

Clients, not the gateway, produce these framings; having our own encoder lets
tests drive every streaming variant (and tampered or truncated ones) through a
live gateway with plain HTTP.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from s3orch.s3 import sigv4
from s3orch.s3.checksums import new_checksum


@dataclass(frozen=True)
class StreamingRequest:
    headers: dict[str, str]
    body: bytes


def _chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)] + [b""]


def _chunk_sts(amz_date: str, scope: str, previous: str, chunk: bytes) -> str:
    return "\n".join(
        ["AWS4-HMAC-SHA256-PAYLOAD", amz_date, scope, previous, sigv4.EMPTY_SHA256,
         hashlib.sha256(chunk).hexdigest()]
    )


def streaming_put(
    url: str,
    data: bytes,
    *,
    access_key: str,
    secret_key: str,
    now: float,
    variant: str,
    chunk_size: int = 64 * 1024,
    checksum: str | None = "crc32",
    region: str = "us-east-1",
) -> StreamingRequest:
    """Headers and body of a PUT using ``variant`` (one of the three STREAMING-* values)."""
    trailer = variant in (sigv4.STREAMING_PAYLOAD_TRAILER, sigv4.STREAMING_UNSIGNED_TRAILER)
    headers = {
        "x-amz-decoded-content-length": str(len(data)),
        "content-encoding": "aws-chunked",
    }
    if trailer and checksum:
        headers["x-amz-trailer"] = f"x-amz-checksum-{checksum}"
    signed = sigv4.sign_headers("PUT", url, headers, variant, access_key, secret_key, region, now)
    headers.update(signed)
    amz_date = signed["x-amz-date"]
    date = amz_date[:8]
    scope = f"{date}/{region}/s3/aws4_request"
    key = sigv4.derive_signing_key(secret_key, date, region, "s3")
    previous = signed["Authorization"].rsplit("Signature=", 1)[1]
    parts: list[bytes] = []
    for chunk in _chunks(data, chunk_size):
        if variant == sigv4.STREAMING_UNSIGNED_TRAILER:
            parts.append(b"%x\r\n" % len(chunk))
        else:
            previous = sigv4.hmac_hex(key, _chunk_sts(amz_date, scope, previous, chunk))
            parts.append(b"%x;chunk-signature=%s\r\n" % (len(chunk), previous.encode()))
        if chunk:
            parts.append(chunk + b"\r\n")
    if trailer:
        lines = b""
        if checksum:
            summer = new_checksum(checksum)
            summer.update(data)
            lines = f"x-amz-checksum-{checksum}:{summer.b64digest()}\n".encode()
        parts.append(lines.replace(b"\n", b"\r\n"))
        if variant == sigv4.STREAMING_PAYLOAD_TRAILER:
            sts = "\n".join(
                ["AWS4-HMAC-SHA256-TRAILER", amz_date, scope, previous, hashlib.sha256(lines).hexdigest()]
            )
            parts.append(b"x-amz-trailer-signature:%s\r\n" % sigv4.hmac_hex(key, sts).encode())
        parts.append(b"\r\n")
    else:
        parts.append(b"\r\n")
    body = b"".join(parts)
    headers["content-length"] = str(len(body))
    return StreamingRequest(headers, body)
