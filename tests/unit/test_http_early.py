"""The S3 channel answers refusals that need no I/O before ``100 Continue``.

Byte-level tests over StringTransport: no sockets, no threads, no reactor.
"""

from __future__ import annotations

import time

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from s3orch.auth.registry import CredentialRegistry
from s3orch.config import load_config_from_string
from s3orch.frontend.assembly import build_frontend
from s3orch.frontend.ops import OpsApp
from s3orch.frontend.root import RootResource
from s3orch.http.site import S3Site
from s3orch.s3 import sigv4

CONFIG = """
server:
  max_object_size: 1000
buckets:
  - name: photos
    credentials: [{access_key_id: photoskey, secret_access_key: photossecret}]
backends:
  - name: b1
    endpoint: http://127.0.0.1:1
    bucket: x
    access_key_id: a
    secret_access_key: s
"""


class _Clock:
    def seconds(self) -> float:
        return time.time()


def _connect() -> tuple[object, StringTransport]:
    config = load_config_from_string(CONFIG)
    frontend = build_frontend(
        server=config.server,
        registry=CredentialRegistry(config.buckets),
        objects=None,  # type: ignore[arg-type]  # never reached before the body
        clock=_Clock(),  # type: ignore[arg-type]
    )
    ops = OpsApp(is_ready=lambda: True)
    site = S3Site(RootResource(frontend, ops.resource()), early_handler=frontend)
    protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 12345))
    transport = StringTransport()
    protocol.makeConnection(transport)  # type: ignore[union-attr]
    return protocol, transport


def _signed_headers(path: str, length: int, secret: str = "photossecret", extra: dict[str, str] | None = None) -> bytes:
    url = "http://gw.test" + path
    headers = dict(extra or {})
    signed = sigv4.sign_headers(
        "PUT", url, headers, sigv4.UNSIGNED_PAYLOAD, "photoskey", secret, "us-east-1", time.time()
    )
    lines = [f"PUT {path} HTTP/1.1", "Host: gw.test", f"Content-Length: {length}", "Expect: 100-continue"]
    lines += [f"{k}: {v}" for k, v in {**headers, **signed}.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_bad_signature_is_refused_before_100_continue() -> None:
    protocol, transport = _connect()
    protocol.dataReceived(_signed_headers("/photos/k", 10, secret="wrong"))  # type: ignore[attr-defined]
    sent = transport.value()
    assert sent.startswith(b"HTTP/1.1 403 ")
    assert b"100 Continue" not in sent
    assert b"<Code>SignatureDoesNotMatch</Code>" in sent
    assert transport.disconnecting  # the body will never be read


def test_oversized_declared_length_is_refused_before_100_continue() -> None:
    protocol, transport = _connect()
    protocol.dataReceived(_signed_headers("/photos/k", 5000))  # type: ignore[attr-defined]
    sent = transport.value()
    assert sent.startswith(b"HTTP/1.1 400 ") and b"<Code>EntityTooLarge</Code>" in sent
    assert b"100 Continue" not in sent


def test_other_bucket_and_bad_md5_are_refused_before_100_continue() -> None:
    protocol, transport = _connect()
    protocol.dataReceived(_signed_headers("/documents/k", 10))  # type: ignore[attr-defined]
    assert transport.value().startswith(b"HTTP/1.1 403 ")
    protocol, transport = _connect()
    protocol.dataReceived(  # type: ignore[attr-defined]
        _signed_headers("/photos/k", 10, extra={"Content-MD5": "not-base64!"})
    )
    assert transport.value().startswith(b"HTTP/1.1 400 ")
    assert b"<Code>InvalidDigest</Code>" in transport.value()


def test_good_request_gets_100_continue_and_body_is_hashed_as_it_arrives() -> None:
    protocol, transport = _connect()
    protocol.dataReceived(_signed_headers("/photos/k", 10))  # type: ignore[attr-defined]
    assert transport.value() == b"HTTP/1.1 100 Continue\r\n\r\n"
    request = protocol.requests[-1]  # type: ignore[attr-defined]
    protocol.dataReceived(b"01234")  # type: ignore[attr-defined]
    assert request.s3.body.received == 5  # spooled and counted before the body ends
    assert not transport.disconnecting
    assert request.s3.body.declared_length == 10


def test_client_gone_mid_body_frees_the_spool_and_is_counted_once() -> None:
    from twisted.internet.error import ConnectionLost
    from twisted.python.failure import Failure

    from s3orch.observe.metrics import REGISTRY

    def count(status: str) -> float:
        value = REGISTRY.get_sample_value("s3o_requests_total", {"method": "PUT", "status_code": status})
        return value or 0.0

    before = count("499")
    protocol, transport = _connect()
    protocol.dataReceived(_signed_headers("/photos/k", 10))  # type: ignore[attr-defined]
    request = protocol.requests[-1]  # type: ignore[attr-defined]
    protocol.dataReceived(b"0123")  # type: ignore[attr-defined]
    protocol.connectionLost(Failure(ConnectionLost()))  # type: ignore[attr-defined]
    assert count("499") == before + 1
    assert request.s3.body._spool.closed  # nothing left on disk or in memory
    request.s3.body.feed(b"late")  # a late byte after the loss is ignored, not spooled
    assert request.s3.accounted


def test_spool_write_failure_is_a_retryable_503_not_a_dropped_connection() -> None:
    import pytest

    from s3orch.http.body import RequestBody
    from s3orch.s3 import errors

    body = RequestBody(max_size=100, declared_length=10, spool_memory_limit=0, spool_dir=None)

    class _Full:
        def write(self, data: bytes) -> int:
            raise OSError(28, "No space left on device")

        def close(self) -> None:
            pass

    body._spool = _Full()  # type: ignore[assignment]
    with pytest.raises(errors.ServiceUnavailable):
        body.feed(b"0123")
    assert body.discarded


def test_response_head_is_one_write_with_lowercase_amz_names_and_sanitized_values() -> None:
    """S3Channel.writeHeaders: status line, every header once, x-amz-* in lower case, blank line."""
    from s3orch.http.site import S3ResponseHeaders

    protocol, transport = _connect()
    headers = S3ResponseHeaders()
    headers.addRawHeader(b"X-Amz-Meta-Owner", b"alice")
    headers.addRawHeader(b"Content-Length", b"3")
    headers.addRawHeader(b"X-Amz-Request-Id", b"r1\r\nInjected: yes")
    headers.addRawHeader(b"Vary", b"a")
    headers.addRawHeader(b"Vary", b"b")
    writes: list[bytes] = []
    transport.write = writes.append  # type: ignore[method-assign]
    protocol.writeHeaders(b"HTTP/1.1", b"200", b"OK", headers)  # type: ignore[attr-defined]
    assert writes == [
        b"HTTP/1.1 200 OK\r\nx-amz-meta-owner: alice\r\nContent-Length: 3\r\n"
        b"x-amz-request-id: r1 Injected: yes\r\nVary: a\r\nVary: b\r\n\r\n"
    ]
