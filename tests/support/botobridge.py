"""A real boto3 S3 client whose requests go to a :class:`~s3orch.testing.GatewayHarness`.

Tests that check what an SDK user sees (its parameters, its error codes, its paginators) run
in-process this way: botocore builds every request exactly as it would for a socket (headers,
checksums, Content-MD5, query encoding), then, at its documented ``before-send`` hook, the
request is re-signed at the harness clock's time and sent over the harness's in-memory
connection; the answer goes back to botocore as if from the wire.  Re-signing matters: botocore
signs at the wall clock, and the gateway checks dates against its own clock.

The harness is single-threaded: use the client from the test's thread (for boto3's transfer
manager, ``TransferConfig(use_threads=False)``).  Requests from other threads are serialised
by a lock, never interleaved inside the harness.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import boto3
from botocore.awsrequest import AWSPreparedRequest, AWSResponse
from botocore.config import Config

from s3orch.testing import GatewayHarness

__all__ = ["harness_client"]

#: Headers botocore computed for its own signature, replaced by the harness's.
_RESIGNED = {"authorization", "x-amz-date", "host", "x-amz-security-token"}


class _Raw(io.BytesIO):
    """The body as urllib3 would hand it to botocore (``read`` and ``stream``)."""

    def stream(self, amt: int = 1024, decode_content: bool | None = None) -> Iterator[bytes]:
        while True:
            chunk = self.read(amt)
            if not chunk:
                return
            yield chunk


def _body(request: AWSPreparedRequest) -> bytes:
    body: Any = request.body
    if body is None:
        return b""
    if isinstance(body, bytes | bytearray):
        return bytes(body)
    if isinstance(body, str):
        return body.encode("utf-8")
    if hasattr(body, "read"):
        data: bytes = body.read()
        return data
    return b"".join(body)


def harness_client(harness: GatewayHarness, access_key: str, secret_key: str, **config: Any) -> Any:
    """A boto3 S3 client (path-style, us-east-1, no retries) talking to ``harness``."""
    client = boto3.client(
        "s3",
        endpoint_url=f"http://{harness.host}",
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name="us-east-1",
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1, "mode": "standard"},
            **config,
        ),
    )

    lock = threading.Lock()

    def send(request: AWSPreparedRequest, **_: Any) -> AWSResponse:
        url = urlsplit(request.url)
        target = url.path + (f"?{url.query}" if url.query else "")
        body = _body(request)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _RESIGNED}
        headers = {k: v.decode("latin-1") if isinstance(v, bytes) else v for k, v in headers.items()}
        payload_hash = headers.pop("X-Amz-Content-SHA256", None) or headers.pop("x-amz-content-sha256", None)
        raw = harness.encode_request(
            request.method,
            target,
            headers=headers,
            body=body,
            credentials=(access_key, secret_key),
            payload_hash=payload_hash,
            host=url.netloc,
        )
        with lock:
            answer = harness.send_raw(raw)
        return AWSResponse(request.url, answer.status, dict(answer.headers), _Raw(answer.body))

    client.meta.events.register("before-send.s3", send)
    return client
