"""The backend client's own SigV4 writer (s3orch.backend.s3_signing) signs exactly as the
general signer (s3orch.s3.sigv4.sign_headers) does, and never lets a value break a line."""

from __future__ import annotations

import pytest

from s3orch.backend.credentials import Credentials
from s3orch.backend.interface import BackendError
from s3orch.backend.s3_signing import BackendSigner
from s3orch.s3.sigv4 import EMPTY_SHA256, UNSIGNED_PAYLOAD, sign_headers

NOW = 1_765_000_000.25


def _lines(block: bytes) -> dict[str, str]:
    text = block.decode("latin-1")
    assert text.endswith("\r\n")
    pairs = [line.split(": ", 1) for line in text[:-2].split("\r\n")]
    assert len({name.lower() for name, _ in pairs}) == len(pairs)  # no header twice
    return {name.lower(): value for name, value in pairs}


CASES = [
    ("GET", "/bucket/some/key", {}, EMPTY_SHA256),
    ("HEAD", "/k%20with%2Bplus", {}, EMPTY_SHA256),
    ("PUT", "/bucket/obj", {"content-type": "application/octet-stream", "content-md5": "1B2M2Y8AsgTpgAmY7PhCfg=="},
     "ab" * 32),
    ("PUT", "/bucket/obj", {"content-type": "application/octet-stream"}, UNSIGNED_PAYLOAD),
    ("GET", "/bucket?encoding-type=url&list-type=2&max-keys=1000&prefix=a%2Fb", {}, EMPTY_SHA256),
    ("GET", "/bucket?prefix=&uploads=", {}, EMPTY_SHA256),
    ("DELETE", "/bucket/k?uploadId=abc%3D%3D", {}, EMPTY_SHA256),
    ("GET", "/bucket/k", {"range": "bytes=0-99"}, EMPTY_SHA256),
    ("PUT", "/bucket/k", {"x-amz-copy-source": "/bucket/src%20key", "x-amz-meta-odd": "  a  b\tc "}, EMPTY_SHA256),
]


@pytest.mark.parametrize("token", ["", "session-token/+="])
@pytest.mark.parametrize(("method", "target", "headers", "payload_hash"), CASES)
def test_signature_and_sent_headers_match_the_general_signer(
    method: str, target: str, headers: dict[str, str], payload_hash: str, token: str
) -> None:
    credentials = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    host = "127.0.0.1:8333"
    signer = BackendSigner(host, "eu-west-3")
    for now in (NOW, NOW + 0.5, NOW + 1, NOW + 86_400):  # same second, next second, next day
        block = signer.header_block(method, target, headers, payload_hash, credentials, now, {"traceparent": "00-x"})
        extra = {**headers, **({"x-amz-security-token": token} if token else {})}
        expected = sign_headers(
            method, f"http://{host}{target}", extra, payload_hash, credentials.access_key_id,
            credentials.secret_access_key, "eu-west-3", now,
        )
        sent = _lines(block)
        assert sent == {
            "host": host,
            **extra,
            **{name.lower(): value for name, value in expected.items()},
            "traceparent": "00-x",
        }


def test_a_new_secret_gets_its_own_signing_key() -> None:
    signer = BackendSigner("h.test", "us-east-1")
    first = _lines(signer.header_block("GET", "/k", {}, EMPTY_SHA256, Credentials("A", "one"), NOW, {}))
    second = _lines(signer.header_block("GET", "/k", {}, EMPTY_SHA256, Credentials("A", "two"), NOW, {}))
    expected = sign_headers("GET", "http://h.test/k", {}, EMPTY_SHA256, "A", "two", "us-east-1", NOW)
    assert second["authorization"] == expected["Authorization"] != first["authorization"]


@pytest.mark.parametrize(
    ("headers", "credentials"),
    [
        ({"x-amz-copy-source": "/b/k\r\nx-evil: 1"}, Credentials("A", "s")),
        ({}, Credentials("A", "s", "token\nx-evil: 1")),
        ({}, Credentials("A\rB", "s")),
    ],
)
def test_a_line_break_in_a_value_is_refused_not_sent(headers: dict[str, str], credentials: Credentials) -> None:
    signer = BackendSigner("h.test", "us-east-1", backend="b1")
    with pytest.raises(BackendError) as raised:
        signer.header_block("PUT", "/k", headers, EMPTY_SHA256, credentials, NOW, {})
    assert raised.value.backend == "b1"
